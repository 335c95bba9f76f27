"""The runtime version; bundles name the minimum they need (``min_runtime``)."""

__version__ = "0.1.0"

__released__ = "2026-11-01T00:00:00Z"
"""Release time of this runtime (UTC); devices never check metadata expiry at an earlier time.
Bump it at every release (see runtime/timefloor.py)."""
