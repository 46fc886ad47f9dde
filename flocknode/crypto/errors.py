"""The one error type for anything wrong with untrusted envelope or canonical bytes."""

from __future__ import annotations


class EnvelopeError(ValueError):
    """Malformed, truncated, corrupted, foreign or oversized input.

    Every decoder in :mod:`flocknode.crypto` raises this (or its subclass
    :class:`CanonicalError`) and nothing else for bad bytes. Programming errors
    by the caller (a wrong argument type, a float64 tensor handed to the encoder)
    raise ``TypeError``/``ValueError`` as usual.
    """


class CanonicalError(EnvelopeError):
    """Canonical tensor bytes that break the format (header, sizes, names, values)."""
