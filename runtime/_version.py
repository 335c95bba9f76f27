"""The runtime version; bundles name the minimum they need (``min_runtime``)."""

__version__ = "0.1.0"
