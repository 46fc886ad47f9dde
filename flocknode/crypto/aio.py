"""Seal into / open from async streams without blocking the trio loop.

The envelope code is blocking (it spends its time in libsodium and hashlib,
which release the GIL), so it runs in a worker thread; these adaptors hand each
chunk to the event loop with ``trio.from_thread.run``. ``send`` is any async
function taking bytes (``trio.abc.SendStream.send_all``, py-libp2p
``INetStream.write``); ``receive`` is any async function taking a maximum size
and returning at most that many bytes and ``b""`` at the end
(``trio.abc.ReceiveStream.receive_some``). py-libp2p's ``INetStream.read``
raises ``StreamEOF`` at the end instead: pass ``eof_errors=(StreamEOF,)``.
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
    """A blocking ``read`` for a worker thread that awaits ``receive`` on the loop.

    An exception in ``eof_errors`` raised by ``receive`` counts as the end of
    the stream (a short stream then fails as a truncated envelope).
    """

    def __init__(
        self, receive: ReceiveFn, eof_errors: tuple[type[BaseException], ...] = ()
    ) -> None:
        self._receive = receive
        self._eof_errors = eof_errors
        self._ended = False

    def read(self, n: int) -> bytes:
        if self._ended:
            return b""
        try:
            return trio.from_thread.run(self._receive, n)
        except self._eof_errors:
            self._ended = True
            return b""


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
    receive: ReceiveFn,
    wrap: KeyWrap,
    *,
    eof_errors: tuple[type[BaseException], ...] = (),
    **kwargs: Any,
) -> dict[str, torch.Tensor]:
    """:func:`~flocknode.crypto.envelope.open_update` reading through ``receive``.

    Other keyword arguments are those of ``open_update`` (recipient, sender,
    update_hash, expected_shapes, blob_id, max_bytes).
    """
    job = functools.partial(open_update, AsyncSource(receive, eof_errors), wrap, **kwargs)
    return await trio.to_thread.run_sync(job)
