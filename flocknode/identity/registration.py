"""The peer-key signature that binds a wallet to its peer id and box key.

``register(peerId, boxPublicKey, multiaddrs, peerSig)`` is sent by the wallet;
``peerSig`` is the peer key's ed25519 signature over
``(chainId, task, wallet, boxPublicKey)``. The contract stores it unchecked;
every node checks it here and ignores registrations where it fails, so nobody
can claim someone else's peer id.
"""

from __future__ import annotations

from eth_utils import to_canonical_address
from libp2p.peer.id import ID

from flocknode.identity.keys import PeerKey, peer_public_key

DOMAIN = b"flocknode/register/v1"


def registration_message(chain_id: int, task: str, wallet: str, box_public_key: bytes) -> bytes:
    """The exact bytes the peer key signs: domain, chain id, task, wallet, box key."""
    if len(box_public_key) != 32:
        raise ValueError("box public key must be 32 bytes")
    return (
        DOMAIN
        + chain_id.to_bytes(32, "big")
        + to_canonical_address(task)
        + to_canonical_address(wallet)
        + box_public_key
    )


def sign_registration(
    peer_key: PeerKey, chain_id: int, task: str, wallet: str, box_public_key: bytes
) -> bytes:
    return peer_key.sign(registration_message(chain_id, task, wallet, box_public_key))


def verify_registration(
    peer_id: bytes,
    peer_sig: bytes,
    chain_id: int,
    task: str,
    wallet: str,
    box_public_key: bytes,
) -> bool:
    """True iff ``peer_sig`` is the signature of the key inlined in ``peer_id``.

    Never raises on malformed input: anything that does not check out is False.
    """
    try:
        pub = peer_public_key(ID(bytes(peer_id)))
        if pub is None:
            return False
        msg = registration_message(chain_id, task, wallet, bytes(box_public_key))
        return bool(pub.verify(msg, bytes(peer_sig)))
    except Exception:
        return False
