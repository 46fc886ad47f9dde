"""The update envelope (docs/protocol.md, step 3): seal once, wrap the key per voter.

Blob layout (what is stored, transferred and hashed into ``blobId``)::

    12 bytes  prefix: magic b"FLKE", version u8 (1), 3 zero bytes, chunk size u32 LE
    24 bytes  libsodium secretstream (XChaCha20-Poly1305) header
    chunks    the canonical bytes (flocknode.crypto.canonical) cut into pieces of
              exactly ``chunk size`` bytes (the last one shorter or equal), each
              pushed as one secretstream message of chunk size + 17 bytes; the
              last one tagged FINAL, the others MESSAGE. The prefix is the
              associated data of the first message, so it cannot be altered.

A truncated, reordered, corrupted or extended blob fails at the chunk where it
happens. The random 32-byte content key is wrapped for each recipient with NaCl
``Box`` (sender box key -> recipient box key) into a :class:`KeyWrap`.

Sealing and opening stream: they hold the input tensors (seal) or the output
tensors (open) plus a few chunks, never a second copy of the whole update.
Both are blocking; from trio call them via ``trio.to_thread.run_sync`` (see
:mod:`flocknode.crypto.aio` for async sinks and sources). The plaintext
SHA-256 (updateHash) runs on a helper thread over memory that no longer
changes (the input tensors when sealing, the filled output when opening), and
the blob SHA-256 (blobId) on another over the ciphertext chunks (at most about
four held), so both overlap the AEAD on a second core.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import nacl.exceptions
import torch
from nacl import bindings as sodium
from nacl.public import Box, PrivateKey, PublicKey

from flocknode.crypto.canonical import (
    DEFAULT_MAX_BYTES,
    CanonicalReader,
    Shapes,
    Tensors,
    iter_canonical,
)
from flocknode.crypto.errors import EnvelopeError
from flocknode.crypto.streams import (
    BackgroundSha256,
    ReadFn,
    Sink,
    Source,
    read_exact,
    sink_writer,
    source_reader,
)

log = logging.getLogger(__name__)

MAGIC = b"FLKE"
ENVELOPE_VERSION = 1
DEFAULT_CHUNK_SIZE = 1 << 20
MIN_CHUNK_SIZE = 1 << 10
MAX_CHUNK_SIZE = 1 << 24
KEY_BYTES = sodium.crypto_secretstream_xchacha20poly1305_KEYBYTES
ABYTES = sodium.crypto_secretstream_xchacha20poly1305_ABYTES
_SS_HEADER = sodium.crypto_secretstream_xchacha20poly1305_HEADERBYTES
_TAG_MESSAGE = sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
_TAG_FINAL = sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL
_PREFIX = struct.Struct("<4sB3sI")
HEAD_LEN = _PREFIX.size + _SS_HEADER
PUBLIC_KEY_BYTES = 32
_BOX_MAC_BYTES = sodium.crypto_box_ZEROBYTES - sodium.crypto_box_BOXZEROBYTES
WRAP_SEALED_BYTES = Box.NONCE_SIZE + KEY_BYTES + _BOX_MAC_BYTES


@dataclass(frozen=True)
class KeyWrap:
    """The content key sealed for one recipient: 32 + 72 bytes."""

    recipient: bytes  # the recipient's X25519 box public key
    sealed: bytes  # Box nonce (24) + ciphertext of the content key (32 + 16)

    def __post_init__(self) -> None:
        if not isinstance(self.recipient, bytes) or len(self.recipient) != PUBLIC_KEY_BYTES:
            raise EnvelopeError("key wrap recipient must be 32 bytes")
        if not isinstance(self.sealed, bytes) or len(self.sealed) != WRAP_SEALED_BYTES:
            raise EnvelopeError(f"key wrap must be {WRAP_SEALED_BYTES} bytes")

    def to_bytes(self) -> bytes:
        return self.recipient + self.sealed

    @classmethod
    def from_bytes(cls, data: bytes) -> KeyWrap:
        if not isinstance(data, bytes) or len(data) != PUBLIC_KEY_BYTES + WRAP_SEALED_BYTES:
            raise EnvelopeError("key wrap has the wrong length")
        return cls(data[:PUBLIC_KEY_BYTES], data[PUBLIC_KEY_BYTES:])


@dataclass(frozen=True)
class SealedUpdate:
    """What the proposer publishes: hashes and size on chain, wraps by gossip."""

    update_hash: bytes  # sha256 of the canonical plaintext
    blob_id: bytes  # sha256 of the whole blob
    size: int  # blob bytes
    wraps: tuple[KeyWrap, ...]  # one per recipient that could take one
    skipped: tuple[bytes, ...] = ()  # recipient keys no Box can be made with (low order)

    def wrap_for(self, recipient: PublicKey | bytes) -> KeyWrap:
        key = bytes(recipient)
        for wrap in self.wraps:
            if wrap.recipient == key:
                return wrap
        raise KeyError("no key wrap for this recipient")


def _check_chunk_size(chunk_size: int) -> None:
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"chunk size must be {MIN_CHUNK_SIZE}..{MAX_CHUNK_SIZE} bytes")


def _plain_chunks(pieces: Sequence[memoryview], chunk_size: int) -> Iterator[bytes]:
    """The concatenated pieces cut into exactly chunk_size bytes (the last <=)."""
    pending = bytearray()
    for piece in pieces:
        pos = 0
        if pending:
            pos = min(chunk_size - len(pending), piece.nbytes)
            pending += piece[:pos]
            if len(pending) < chunk_size:
                continue
            yield bytes(pending)
            pending.clear()
        while piece.nbytes - pos >= chunk_size:
            yield bytes(piece[pos : pos + chunk_size])
            pos += chunk_size
        pending += piece[pos:]
    if pending:
        yield bytes(pending)


def wrap_key(key: bytes, sender: PrivateKey, recipient: PublicKey) -> KeyWrap:
    """Raises nacl.exceptions.CryptoError for a recipient key of low order."""
    return KeyWrap(bytes(recipient), bytes(Box(sender, recipient).encrypt(key)))


def _boxes(
    sender: PrivateKey, recipients: Sequence[PublicKey]
) -> tuple[list[tuple[bytes, Box]], list[bytes]]:
    """(key, Box) per recipient that takes one, and the keys of those that do not."""
    boxes: list[tuple[bytes, Box]] = []
    skipped: list[bytes] = []
    for r in recipients:
        try:
            boxes.append((bytes(r), Box(sender, r)))
        except nacl.exceptions.CryptoError:  # libsodium refuses a low-order key
            skipped.append(bytes(r))
    return boxes, skipped


def unwrap_key(wrap: KeyWrap, recipient: PrivateKey, sender: PublicKey) -> bytes:
    """The content key, or EnvelopeError if the wrap is not for us or not from sender."""
    if not hmac.compare_digest(wrap.recipient, bytes(recipient.public_key)):
        raise EnvelopeError("key wrap is for another recipient")
    try:
        key = Box(recipient, sender).decrypt(wrap.sealed)
    except nacl.exceptions.CryptoError:
        raise EnvelopeError("key wrap does not open with these keys") from None
    if len(key) != KEY_BYTES:
        raise EnvelopeError("wrapped content key has the wrong length")
    return key


def encrypt_chunks(
    chunks: Iterable[tuple[bytes, int]], sink: Sink, key: bytes, chunk_size: int
) -> tuple[bytes, int]:
    """Write the blob of ``(plaintext, tag)`` chunks; return (blobId, size).

    The core of :func:`seal_update`; it trusts its caller to cut the chunks
    and set the tags as the format says (tests use it to forge bad streams).
    """
    write = sink_writer(sink)
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    prefix = _PREFIX.pack(MAGIC, ENVELOPE_VERSION, bytes(3), chunk_size)
    head = prefix + sodium.crypto_secretstream_xchacha20poly1305_init_push(state, key)
    with _chunk_hasher(chunk_size) as blob_hash:
        blob_hash.add(head)
        write(head)
        size = len(head)
        for i, (chunk, tag) in enumerate(chunks):
            ad = prefix if i == 0 else None
            ct = sodium.crypto_secretstream_xchacha20poly1305_push(state, chunk, ad, tag)
            blob_hash.add(ct)
            write(ct)
            size += len(ct)
        return blob_hash.digest(), size


def _chunk_hasher(chunk_size: int) -> BackgroundSha256:
    """A helper-thread hash of ciphertext chunks that holds at most ~4 of them."""
    return BackgroundSha256(batch=2 * chunk_size, max_pending=4 * (chunk_size + ABYTES))


def seal_update(
    tensors: Tensors,
    sink: Sink,
    *,
    sender: PrivateKey,
    recipients: Sequence[PublicKey],
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> SealedUpdate:
    """Encrypt the canonical bytes of ``tensors`` into ``sink``; wrap the key for
    each recipient. Blocking; the sink receives one write per chunk. The
    updateHash is computed on a helper thread straight from the tensors.

    A recipient key that no Box can be made with (a low-order point: registry
    data is untrusted) gets no wrap and is listed in ``skipped``; the others
    are served. EnvelopeError, before anything is written, if none is usable.
    """
    _check_chunk_size(chunk_size)
    if not recipients or len({bytes(r) for r in recipients}) != len(recipients):
        raise ValueError("recipients must be a non-empty list of distinct public keys")
    boxes, skipped = _boxes(sender, recipients)
    if not boxes:
        raise EnvelopeError("no recipient has a usable box key")
    pieces = list(iter_canonical(tensors))
    last = -(-sum(p.nbytes for p in pieces) // chunk_size) - 1
    tagged = (
        (chunk, _TAG_FINAL if i == last else _TAG_MESSAGE)
        for i, chunk in enumerate(_plain_chunks(pieces, chunk_size))
    )
    key = sodium.crypto_secretstream_xchacha20poly1305_keygen()
    with BackgroundSha256() as plain_hash:
        for piece in pieces:
            plain_hash.add(piece)
        blob_id, size = encrypt_chunks(tagged, sink, key, chunk_size)
        update_hash = plain_hash.digest()
    wraps = tuple(KeyWrap(r, bytes(box.encrypt(key))) for r, box in boxes)
    for r in skipped:
        log.warning("no key wrap for a recipient with an unusable box key %s", r.hex()[:16])
    return SealedUpdate(update_hash, blob_id, size, wraps, tuple(skipped))


def _read_head(read: ReadFn) -> tuple[bytes, int, bytes]:
    head = read_exact(read, HEAD_LEN)
    if len(head) < HEAD_LEN:
        raise EnvelopeError("envelope truncated in its header")
    prefix = head[: _PREFIX.size]
    magic, version, reserved, chunk_size = _PREFIX.unpack(prefix)
    if magic != MAGIC or version != ENVELOPE_VERSION or reserved != bytes(3):
        raise EnvelopeError("not an update envelope of a known version")
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise EnvelopeError("envelope chunk size out of bounds")
    return prefix, chunk_size, head[_PREFIX.size :]


def open_update(
    source: Source,
    wrap: KeyWrap,
    *,
    recipient: PrivateKey,
    sender: PublicKey,
    update_hash: bytes,
    expected_shapes: Shapes | None = None,
    blob_id: bytes | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> dict[str, torch.Tensor]:
    """Decrypt and verify an envelope; return its tensors (finite float32).

    Checks every chunk's tag, that the FINAL chunk ends the blob, the plaintext
    sha256 against ``update_hash``, ``blob_id`` if given, and the names and
    shapes if ``expected_shapes`` is given. Raises only :class:`EnvelopeError`
    for bad input (errors of ``source`` itself, such as OSError, propagate).
    """
    key = unwrap_key(wrap, recipient, sender)
    read = source_reader(source)
    prefix, chunk_size, ss_header = _read_head(read)
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    sodium.crypto_secretstream_xchacha20poly1305_init_pull(state, ss_header, key)
    del key
    blob_hash = _chunk_hasher(chunk_size) if blob_id is not None else None
    if blob_hash is not None:
        blob_hash.add(prefix + ss_header)
    full = chunk_size + ABYTES
    index = 0
    with BackgroundSha256() as plain_hash, blob_hash or contextlib.nullcontext():
        reader = CanonicalReader(
            max_bytes=max_bytes, expected_shapes=expected_shapes, on_span=plain_hash.add
        )
        while True:
            ct = read_exact(read, full)
            if len(ct) <= ABYTES:
                raise EnvelopeError(f"envelope truncated at chunk {index}")
            try:
                pt, tag = sodium.crypto_secretstream_xchacha20poly1305_pull(
                    state, ct, prefix if index == 0 else None
                )
            except nacl.exceptions.CryptoError:
                raise EnvelopeError(f"envelope chunk {index} fails authentication") from None
            if tag not in (_TAG_MESSAGE, _TAG_FINAL) or (tag != _TAG_FINAL and len(ct) < full):
                raise EnvelopeError(f"envelope chunk {index} has a bad tag or length")
            if blob_hash is not None:
                blob_hash.add(ct)
            reader.feed(pt)
            index += 1
            if tag == _TAG_FINAL:
                break
        if read_exact(read, 1):
            raise EnvelopeError("bytes after the final envelope chunk")
        if not reader.complete:
            raise EnvelopeError("envelope ends before the tensor data does")
        digest = plain_hash.digest()
        blob_digest = blob_hash.digest() if blob_hash is not None else None
    if not hmac.compare_digest(digest, update_hash):
        raise EnvelopeError("decrypted update does not match its updateHash")
    if blob_digest is not None and not hmac.compare_digest(blob_digest, blob_id or b""):
        raise EnvelopeError("envelope bytes do not match the blobId")
    return reader.finish()
