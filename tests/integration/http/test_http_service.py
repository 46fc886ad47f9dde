"""The HTTP service on a real hypercorn (trio) socket on loopback: routes, hostile
clients, a taken port, and a prompt stop."""

from __future__ import annotations

import socket

import httpx
import pytest
import trio

from flocknode.http.app import build_app
from flocknode.http.server import HttpError, HttpService
from flocknode.status import NodeStatus

pytestmark = pytest.mark.integration

STATUS = NodeStatus.from_json(
    {
        "round": 2,
        "phase": "train",
        "peers": [],
        "holds_global_model": False,
        "global_model_hash": "0x" + "cd" * 32,
        "chain": {"age_seconds": 1.0, "error": ""},
        "uptime": float("nan"),  # not JSON: must come out as null
    }
)


async def _get(url: str) -> httpx.Response:
    def go() -> httpx.Response:
        with httpx.Client(timeout=10) as c:
            return c.get(url)

    result: httpx.Response = await trio.to_thread.run_sync(go)
    return result


async def _raw(port: int, data: bytes) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(data)
        out = b""
        with trio.move_on_after(5):
            while chunk := await stream.receive_some(65536):
                out += chunk
        return out


async def _until_closed(stream: trio.SocketStream) -> bytes:
    """What the server sends before it closes ``stream`` (it answers nothing to a
    request it never finished reading)."""
    out = b""
    try:
        while chunk := await stream.receive_some(65536):
            out += chunk
    except trio.BrokenResourceError:  # closed with a reset
        pass
    return out


async def test_routes_hostile_clients_and_stop() -> None:
    service = HttpService(build_app(lambda: STATUS), "127.0.0.1:0")
    async with trio.open_nursery() as nursery:
        (url,) = await nursery.start(service.run)
        port = int(url.rsplit(":", 1)[1])
        r = await _get(url + "/readyz")
        assert r.status_code == 503
        assert r.json()["reasons"] == [
            "no peer connected",
            "does not hold the current global model 0xcdcdcdcdcdcd",
        ]
        r = await _get(url + "/status.json")
        assert r.status_code == 200 and r.json()["uptime"] is None
        r = await _get(url + "/")
        assert "default-src 'none'" in r.headers["content-security-policy"]
        assert "not ready" in r.text

        # garbage, an oversized header, a half request: clean answers, server lives on
        assert (await _raw(port, b"\x16\x03\x01garbage\r\n\r\n")).startswith(b"HTTP/1.1 400")
        huge = b"GET / HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 200_000 + b"\r\n\r\n"
        reply = await _raw(port, huge)
        assert reply == b"" or reply.split(b" ")[1] in (b"400", b"431"), reply[:80]
        with trio.move_on_after(0.5):
            await _raw(port, b"GET /metr")
        assert (await _get(url + "/healthz")).status_code == 200

        # a client stuck in the middle of a request does not hold the stop: run
        # returns and the server has closed the client's connection
        stuck = await trio.open_tcp_stream("127.0.0.1", port)
        await stuck.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        service.stop()
    async with stuck:
        with trio.fail_after(30):  # guards a hang only
            assert await _until_closed(stuck) == b""


async def test_a_taken_port_is_one_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        service = HttpService(build_app(lambda: STATUS), f"127.0.0.1:{port}")
        with pytest.raises(HttpError, match=rf"http.listen: cannot listen on 127.0.0.1:{port}"):
            await service.run()
