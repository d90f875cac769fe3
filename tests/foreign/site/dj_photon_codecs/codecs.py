"""The stand-in's codec module: it needs a dependency that is not installed, so importing it fails."""

try:
    from ._anscombe import generalized_anscombe  # noqa: F401  (never shipped: the missing dependency)
except ImportError as error:
    raise ImportError(
        "anscombe-transform is required by the stand-in of dj-photon-codecs, and is not installed"
    ) from error
