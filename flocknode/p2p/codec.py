"""msgpack codec of the gossip messages: a type id and a version in every message.

Wire form: one msgpack map with short string keys::

    {"t": type id, "v": 1, "r": round, ...type-specific keys}
    UpdateAnnounce  "b": blob id (bin 32), "s": size, ["h": update hash (bin 32)]
    KeyWraps        "b": blob id (bin 32), "w": [[recipient (bin 32), wrapped (bin)], ...]
    ModelAvailable  "m": model hash (bin 32), "s": size

``decode_message`` is the only way in: it turns any input that is not exactly
such a map (wrong type, extra or missing or duplicate keys, a bool where an int
belongs, wrong lengths, trailing bytes, over the size cap) into one
``DecodeError`` whose ``reason`` is a short label for the drop counters. It
never raises anything else.
"""

from __future__ import annotations

from typing import Any

import msgpack

from flocknode.p2p.messages import (
    BOX_KEY_LEN,
    HASH_LEN,
    MAX_CONTENT_SIZE,
    MAX_ROUND,
    MAX_WRAPPED_KEY_LEN,
    MAX_WRAPS,
    KeyWraps,
    Message,
    ModelAvailable,
    UpdateAnnounce,
    WireKeyWrap,
)

WIRE_VERSION = 1
MAX_MESSAGE_BYTES = 64 * 1024 - 1  # "under 64 KiB" (docs/protocol.md, "Wire")


class DecodeError(Exception):
    """Bytes that are not a well-formed gossip message. ``reason`` labels the drop."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        super().__init__(f"{reason}: {detail}" if detail else reason)


# -- encode ---------------------------------------------------------------
def encode_message(msg: Message) -> bytes:
    """The wire bytes of ``msg``. Raises ValueError if it would not decode."""
    if not isinstance(msg, UpdateAnnounce | KeyWraps | ModelAvailable):
        raise ValueError(f"not a gossip message: {type(msg).__name__}")
    body: dict[str, Any] = {"t": msg.TYPE_ID, "v": WIRE_VERSION, "r": msg.round}
    if isinstance(msg, UpdateAnnounce):
        body |= {"b": msg.blob_id, "s": msg.size}
        if msg.update_hash is not None:
            body["h"] = msg.update_hash
    elif isinstance(msg, KeyWraps):
        body |= {"b": msg.blob_id, "w": [[w.recipient, w.wrapped] for w in msg.wraps]}
    else:
        body |= {"m": msg.model_hash, "s": msg.size}
    try:
        data: bytes = msgpack.packb(body, use_bin_type=True)
        decode_message(data)  # the encoder may only emit what the decoder accepts
    except (DecodeError, TypeError, OverflowError, ValueError) as e:
        raise ValueError(f"cannot encode {type(msg).__name__}: {e}") from None
    return data


# -- decode ---------------------------------------------------------------
def decode_message(data: bytes | bytearray | memoryview) -> Message:
    """Parse and shape-check one gossip message; any defect is a ``DecodeError``."""
    try:
        return _decode(data)
    except DecodeError:
        raise
    except Exception as e:  # belt and braces: nothing else may escape
        raise DecodeError("malformed", type(e).__name__) from None


def _decode(data: bytes | bytearray | memoryview) -> Message:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError("malformed", "not bytes")
    if len(data) > MAX_MESSAGE_BYTES:
        raise DecodeError("too_large", f"{len(data)} bytes")
    try:
        obj = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            object_pairs_hook=_unique_map,
            max_ext_len=0,
        )
    except DecodeError:
        raise
    except Exception as e:
        raise DecodeError("malformed", f"msgpack: {type(e).__name__}") from None
    if not isinstance(obj, dict):
        raise DecodeError("malformed", "not a map")
    type_id = obj.get("t")
    if type(type_id) is not int:
        raise DecodeError("malformed", "type id")
    version = obj.get("v")
    if type(version) is not int:
        raise DecodeError("malformed", "version")
    if version != WIRE_VERSION:
        raise DecodeError("bad_version", str(version))
    if type_id == UpdateAnnounce.TYPE_ID:
        return _update_announce(obj)
    if type_id == KeyWraps.TYPE_ID:
        return _key_wraps(obj)
    if type_id == ModelAvailable.TYPE_ID:
        return _model_available(obj)
    raise DecodeError("unknown_type", str(type_id))


def _unique_map(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise DecodeError("malformed", "duplicate key")
    return out


def _keys(obj: dict[str, Any], required: set[str], optional: frozenset[str] = frozenset()) -> None:
    keys = set(obj)
    if not required <= keys or not keys <= required | optional:
        raise DecodeError("malformed", f"keys {sorted(map(str, keys))}")


def _uint(obj: dict[str, Any], key: str, maximum: int) -> int:
    v = obj[key]
    if type(v) is not int or not 0 <= v <= maximum:
        raise DecodeError("malformed", f"field {key}")
    return v


def _bin(v: Any, key: str, length: int | None = None, max_len: int | None = None) -> bytes:
    if type(v) is not bytes:
        raise DecodeError("malformed", f"field {key}")
    if length is not None and len(v) != length:
        raise DecodeError("malformed", f"field {key} length")
    if max_len is not None and not 0 < len(v) <= max_len:
        raise DecodeError("malformed", f"field {key} length")
    return v


_COMMON = {"t", "v", "r"}


def _update_announce(obj: dict[str, Any]) -> UpdateAnnounce:
    _keys(obj, _COMMON | {"b", "s"}, frozenset({"h"}))
    return UpdateAnnounce(
        round=_uint(obj, "r", MAX_ROUND),
        blob_id=_bin(obj["b"], "b", HASH_LEN),
        size=_uint(obj, "s", MAX_CONTENT_SIZE),
        update_hash=_bin(obj["h"], "h", HASH_LEN) if "h" in obj else None,
    )


def _key_wraps(obj: dict[str, Any]) -> KeyWraps:
    _keys(obj, _COMMON | {"b", "w"})
    raw = obj["w"]
    if type(raw) is not list or len(raw) > MAX_WRAPS:
        raise DecodeError("malformed", "field w")
    wraps = []
    for item in raw:
        if type(item) is not list or len(item) != 2:
            raise DecodeError("malformed", "field w entry")
        wraps.append(
            WireKeyWrap(
                recipient=_bin(item[0], "w.recipient", BOX_KEY_LEN),
                wrapped=_bin(item[1], "w.wrapped", max_len=MAX_WRAPPED_KEY_LEN),
            )
        )
    return KeyWraps(
        round=_uint(obj, "r", MAX_ROUND),
        blob_id=_bin(obj["b"], "b", HASH_LEN),
        wraps=tuple(wraps),
    )


def _model_available(obj: dict[str, Any]) -> ModelAvailable:
    _keys(obj, _COMMON | {"m", "s"})
    return ModelAvailable(
        round=_uint(obj, "r", MAX_ROUND),
        model_hash=_bin(obj["m"], "m", HASH_LEN),
        size=_uint(obj, "s", MAX_CONTENT_SIZE),
    )
