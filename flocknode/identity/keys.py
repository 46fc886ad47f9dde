"""Peer key (ed25519, libp2p identity) and box key (X25519, receives content keys).

Both live in the data dir as raw 32-byte secrets with file mode 0600. Loading
refuses a file that other users can read, so a key copied around carelessly is
noticed before it is used.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import nacl.exceptions
from libp2p.crypto.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from libp2p.crypto.keys import KeyPair
from libp2p.peer.id import ID
from nacl import bindings as _sodium
from nacl.public import PrivateKey as _BoxPrivateKey
from nacl.public import PublicKey as _BoxPublicKey

from flocknode.errors import KeyFileError
from flocknode.fsutil import atomic_write_bytes

SECRET_LEN = 32


@dataclass(frozen=True)
class PeerKey:
    """The libp2p identity: signs gossip, authenticates Noise sessions."""

    keypair: KeyPair = field(repr=False)

    @classmethod
    def generate(cls) -> PeerKey:
        priv = Ed25519PrivateKey.new()
        return cls(KeyPair(priv, priv.get_public_key()))

    @classmethod
    def from_seed(cls, seed: bytes) -> PeerKey:
        priv = Ed25519PrivateKey.from_bytes(seed)
        return cls(KeyPair(priv, priv.get_public_key()))

    @property
    def peer_id(self) -> ID:
        return ID.from_pubkey(self.keypair.public_key)

    def seed(self) -> bytes:
        return self.keypair.private_key.to_bytes()

    def sign(self, data: bytes) -> bytes:
        return self.keypair.private_key.sign(data)


@dataclass(frozen=True)
class BoxKey:
    """The X25519 key that receives the wrapped content keys of updates."""

    private: _BoxPrivateKey = field(repr=False)

    @classmethod
    def generate(cls) -> BoxKey:
        return cls(_BoxPrivateKey.generate())

    @property
    def public(self) -> _BoxPublicKey:
        return self.private.public_key

    @property
    def public_bytes(self) -> bytes:
        return bytes(self.private.public_key)

    def secret(self) -> bytes:
        return bytes(self.private)


# Any clamped scalar gives the same verdict in usable_box_key: clamping makes it a
# multiple of the cofactor 8 and smaller than 8 times the prime subgroup order.
_PROBE_SCALAR = bytes(range(1, SECRET_LEN + 1))


def usable_box_key(public: bytes) -> bool:
    """True when a NaCl Box can be made with ``public`` as the other side's key.

    libsodium refuses (``crypto_scalarmult`` fails, so ``Box`` raises) a key of
    low order: the u-coordinates 0, 1, p-1 and the two of order 8, in canonical
    or non-canonical encodings (u + p, or bit 255 set). The shared secret with
    such a key would not depend on our secret key. The contract does not refuse
    them all, so a registration is checked here before anyone seals for it.
    """
    if not isinstance(public, bytes) or len(public) != SECRET_LEN:
        return False
    try:
        _sodium.crypto_scalarmult(_PROBE_SCALAR, public)
    except nacl.exceptions.CryptoError:
        return False
    return True


def write_secret(path: Path, secret: bytes) -> None:
    """Write a secret atomically with mode 0600 (never readable by others, even briefly)."""
    atomic_write_bytes(path, secret, mode=0o600)


def read_secret(path: Path, what: str) -> bytes:
    """Read a 32-byte secret, refusing files others can read. Errors name the file."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise KeyFileError(str(path), "", f"{what} file not found") from None
    except OSError as e:
        raise KeyFileError(str(path), "", f"cannot read {what} file: {e.strerror}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            str(path),
            "",
            f"{what} file is accessible by other users (mode {stat.S_IMODE(st.st_mode):o}); "
            f"run: chmod 600 {path}",
        )
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise KeyFileError(str(path), "", f"cannot read {what} file: {e.strerror}") from None
    if len(data) != SECRET_LEN:
        raise KeyFileError(str(path), "", f"{what} file is malformed (expected {SECRET_LEN} bytes)")
    return data


def load_peer_key(path: Path) -> PeerKey:
    return PeerKey.from_seed(read_secret(path, "peer key"))


def load_box_key(path: Path) -> BoxKey:
    return BoxKey(_BoxPrivateKey(read_secret(path, "box key")))


def load_or_create_peer_key(path: Path) -> PeerKey:
    if Path(path).exists():
        return load_peer_key(path)
    key = PeerKey.generate()
    write_secret(path, key.seed())
    return key


def load_or_create_box_key(path: Path) -> BoxKey:
    if Path(path).exists():
        return load_box_key(path)
    key = BoxKey.generate()
    write_secret(path, key.secret())
    return key


def peer_public_key(peer_id: ID) -> Ed25519PublicKey | None:
    """The ed25519 public key inlined in a peer id, or None for any other kind of id."""
    key = peer_id.extract_public_key()
    return key if isinstance(key, Ed25519PublicKey) else None
