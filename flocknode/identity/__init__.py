"""A node's three keys (docs/protocol.md, "Parties and keys") and its data-dir layout."""

from flocknode.identity.keys import (
    BoxKey,
    PeerKey,
    load_box_key,
    load_or_create_box_key,
    load_or_create_peer_key,
    load_peer_key,
    usable_box_key,
)
from flocknode.identity.layout import DataDir
from flocknode.identity.registration import (
    registration_message,
    sign_registration,
    verify_registration,
)

__all__ = [
    "BoxKey",
    "DataDir",
    "PeerKey",
    "load_box_key",
    "load_or_create_box_key",
    "load_or_create_peer_key",
    "load_peer_key",
    "registration_message",
    "sign_registration",
    "usable_box_key",
    "verify_registration",
]
