"""The version, in the module hatch-vcs writes for the real package."""

version = "0.1.0"
