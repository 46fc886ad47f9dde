"""Wire messages of the task gossip topic (docs/protocol.md, "Wire", steps 3, 4 and 9).

Plain frozen dataclasses; ``flocknode.p2p.codec`` turns them into bytes and back
and checks their shape (types, lengths, caps); ``flocknode.p2p.validation`` checks
what they mean (round window, sender). Content ids and hashes are SHA-256
digests (32 bytes); blobs are opaque to this layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

HASH_LEN = 32
BOX_KEY_LEN = 32
MAX_WRAPPED_KEY_LEN = 128  # the envelope's wraps are 72 bytes; room for a format change
MAX_WRAPS = 256  # one per voter; the task's max participants is 256
MAX_ROUND = (1 << 64) - 1
MAX_CONTENT_SIZE = 1 << 40  # 1 TiB: a sanity bound; fetchers apply their own caps


@dataclass(frozen=True)
class UpdateAnnounce:
    """A proposer's sealed update is available: ``{r, blobId, size}`` (step 3).

    ``update_hash`` (the plaintext hash, also on chain) is optional.
    """

    TYPE_ID: ClassVar[int] = 1
    round: int
    blob_id: bytes
    size: int
    update_hash: bytes | None = None


@dataclass(frozen=True)
class WireKeyWrap:
    """The content key of one blob wrapped for one recipient's box key, as gossiped.

    The wire form of ``flocknode.crypto.KeyWrap`` (whose ``sealed`` is ``wrapped``
    here); the p2p layer checks only its shape."""

    recipient: bytes  # the recipient's X25519 box public key (32 bytes)
    wrapped: bytes  # opaque to the p2p layer (NaCl Box output)


@dataclass(frozen=True)
class KeyWraps:
    """A proposer's key wraps for the elected voters, sent after train closes (step 3)."""

    TYPE_ID: ClassVar[int] = 2
    round: int
    blob_id: bytes
    wraps: tuple[WireKeyWrap, ...]


@dataclass(frozen=True)
class ModelAvailable:
    """A node holds the global model of ``round`` and serves it on /flock/model/1 (step 9)."""

    TYPE_ID: ClassVar[int] = 3
    round: int
    model_hash: bytes
    size: int


Message = UpdateAnnounce | KeyWraps | ModelAvailable
MESSAGE_TYPES: dict[int, type[UpdateAnnounce] | type[KeyWraps] | type[ModelAvailable]] = {
    cls.TYPE_ID: cls for cls in (UpdateAnnounce, KeyWraps, ModelAvailable)
}
