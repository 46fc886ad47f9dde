"""The update envelope: canonical tensor bytes, chunked AEAD, per-voter key wraps.

Use::

    from flocknode.crypto import seal_update, open_update, update_hash

    # proposer (blocking: run it in trio.to_thread.run_sync)
    with open(tmp_path, "wb") as f:
        sealed = seal_update(update, f, sender=box_key.private, recipients=voter_box_pubs)
    # sealed.update_hash, sealed.blob_id, sealed.size -> submitUpdate;
    # sealed.wrap_for(voter_pub) -> gossip after the train phase

    # voter
    with open(blob_path, "rb") as f:
        tensors = open_update(
            f, wrap, recipient=box_key.private, sender=proposer_box_pub,
            update_hash=hash_on_chain, expected_shapes=model_shapes,
        )

    # models and aggregation
    h = update_hash(state_dict)                      # sha256 of the canonical bytes
    for piece in iter_canonical(state_dict): ...     # stream them to a file or peer
    tensors = parse_canonical(data)                  # or CanonicalReader for pieces

Everything fed untrusted bytes raises only :class:`EnvelopeError` (canonical
parsing raises its subclass :class:`CanonicalError`). Formats: see
:mod:`flocknode.crypto.canonical` and :mod:`flocknode.crypto.envelope`.
"""

from flocknode.crypto.canonical import (
    CanonicalReader,
    canonical_bytes,
    canonical_size,
    iter_canonical,
    parse_canonical,
    spec_size,
    update_hash,
)
from flocknode.crypto.envelope import (
    DEFAULT_CHUNK_SIZE,
    KeyWrap,
    SealedUpdate,
    open_update,
    seal_update,
)
from flocknode.crypto.errors import CanonicalError, EnvelopeError

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "CanonicalError",
    "CanonicalReader",
    "EnvelopeError",
    "KeyWrap",
    "SealedUpdate",
    "canonical_bytes",
    "canonical_size",
    "iter_canonical",
    "open_update",
    "parse_canonical",
    "seal_update",
    "spec_size",
    "update_hash",
]
