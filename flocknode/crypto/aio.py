"""Seal into / open from async streams without blocking the trio loop.

The envelope code is blocking (it spends its time in libsodium and hashlib,
which release the GIL), so it runs in a worker thread; these adaptors hand each
chunk to the event loop with ``trio.from_thread.run``. ``send`` is any async
function taking bytes (``trio.abc.SendStream.send_all``, py-libp2p
``INetStream.write``); ``receive`` is any async function taking a maximum size
and returning at most that many bytes, ``b""`` at the end
(``trio.abc.ReceiveStream.receive_some``, ``INetStream.read``).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import torch
import trio
from nacl.public import PrivateKey, PublicKey

from flocknode.crypto.canonical import Tensors
from flocknode.crypto.envelope import DEFAULT_CHUNK_SIZE, KeyWrap, SealedUpdate, open_update
from flocknode.crypto.envelope import seal_update as _seal_update

SendFn = Callable[[bytes], Awaitable[Any]]
ReceiveFn = Callable[[int], Awaitable[bytes]]


class AsyncSink:
    """A blocking ``write`` for a worker thread that awaits ``send`` on the loop."""

    def __init__(self, send: SendFn) -> None:
        self._send = send

    def write(self, data: bytes) -> None:
        trio.from_thread.run(self._send, data)


class AsyncSource:
    """A blocking ``read`` for a worker thread that awaits ``receive`` on the loop."""

    def __init__(self, receive: ReceiveFn) -> None:
        self._receive = receive

    def read(self, n: int) -> bytes:
        return trio.from_thread.run(self._receive, n)


async def seal_update_to(
    tensors: Tensors,
    send: SendFn,
    *,
    sender: PrivateKey,
    recipients: Sequence[PublicKey],
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> SealedUpdate:
    """:func:`~flocknode.crypto.envelope.seal_update` writing through ``send``."""
    job = functools.partial(
        _seal_update,
        tensors,
        AsyncSink(send),
        sender=sender,
        recipients=recipients,
        chunk_size=chunk_size,
    )
    return await trio.to_thread.run_sync(job)


async def open_update_from(
    receive: ReceiveFn, wrap: KeyWrap, **kwargs: Any
) -> dict[str, torch.Tensor]:
    """:func:`~flocknode.crypto.envelope.open_update` reading through ``receive``.

    Keyword arguments are those of ``open_update`` (recipient, sender,
    update_hash, expected_shapes, blob_id, max_bytes).
    """
    job = functools.partial(open_update, AsyncSource(receive), wrap, **kwargs)
    return await trio.to_thread.run_sync(job)
