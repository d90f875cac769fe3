"""Testing support for codec authors: real services as pytest fixtures (and the conformance kit)."""
