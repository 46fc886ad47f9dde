"""A JSON-RPC fault proxy between a cluster node and anvil (``--chaos rpc``;
docs/protocol.md, "Faults and the promises kept under them").

Each node of a cluster run with ``--chaos rpc`` gets a proxy of its own on a
loopback port, and its ``chain.rpc_url`` points there. The proxy forwards every
request to anvil and answers like a public provider does:

- always: an ``eth_getLogs`` over more than ``RANGE_CAP`` blocks is refused
  with the error text such providers give (``range_cap``);
- while a fault window is open (``open_window``, bounded in time by the
  chaos): a drawn fraction of the requests gets an HTTP 500 or a JSON-RPC
  ``-32000`` error (``error``), is held longer than the node's request timeout
  and then dropped (``timeout``), is forwarded and its answer dropped with the
  connection (``drop``), gets HTTP 429 (``rate_limit``), or is answered as of an
  older block, as a lagging backend behind a load balancer does (``stale``:
  ``eth_blockNumber`` says an older block, a ``latest`` read is run on one).

Which request gets what is drawn from the chaos seed (:class:`FaultDraw`, pure
and tested on its own); every fault injected is counted per kind. The HTTP side
is the standard library's threading HTTP server (one thread per connection, so
a held request holds nothing else) and ``http.client`` towards anvil.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import random
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from flocknode.cluster.launcher import ClusterState
from flocknode.commands.init import render_config
from flocknode.config import load_config
from flocknode.fsutil import atomic_write_text

RANGE_CAP = 1000  # blocks per eth_getLogs query, as many public providers allow
RANGE_CAP_MESSAGE = "exceed maximum block range: {cap}"
WINDOW_SECONDS = 20.0  # a fault window: longer than a held request, shorter than a phase
FAULT_SHARE = 0.25  # of the requests in a fault window
# the kinds drawn for a faulted request, with their weights
WINDOW_KINDS: tuple[tuple[str, float], ...] = (
    ("error", 3.0),
    ("rate_limit", 2.0),
    ("drop", 2.0),
    ("stale", 3.0),
    ("timeout", 2.0),
)
KINDS = (*(k for k, _ in WINDOW_KINDS), "range_cap")
STALE_LAG = (2, 6)  # blocks behind the head a stale answer is (inclusive range)
# Only reads are answered stale: a lagging backend still forwards a write.
STALE_METHODS = frozenset({"eth_blockNumber", "eth_call", "eth_getBlockByNumber"})
MAX_BODY = 4 << 20  # bytes of a request body read from a node


@dataclass(frozen=True)
class Decision:
    """What the proxy does with one request: ``kind`` "pass" or a fault kind."""

    kind: str
    lag: int = 0  # stale: blocks behind the head
    http_500: bool = False  # error: an HTTP 500 rather than a JSON-RPC error


PASS = Decision("pass")


class FaultDraw:
    """The seeded draws of one proxy: which request gets which fault.

    ``decide`` takes the request's method and whether a fault window is open;
    the draws advance only inside a window, so a run's faults depend on the
    seed and the order of the requests in windows, not on the traffic between.
    """

    def __init__(
        self,
        seed: int,
        share: float = FAULT_SHARE,
        kinds: tuple[tuple[str, float], ...] = WINDOW_KINDS,
    ) -> None:
        self._rng = random.Random(seed)
        self.share = share
        self._kinds = [k for k, _ in kinds]
        self._weights = [w for _, w in kinds]
        self._lock = threading.Lock()

    def decide(self, method: str, window_open: bool) -> Decision:
        if not window_open:
            return PASS
        with self._lock:
            if self._rng.random() >= self.share:
                return PASS
            kind = self._rng.choices(self._kinds, self._weights)[0]
            if kind == "stale" and method not in STALE_METHODS:
                kind = "error"  # a write or a pinned read has no stale answer here
            lag = self._rng.randint(*STALE_LAG) if kind == "stale" else 0
            return Decision(kind, lag=lag, http_500=kind == "error" and self._rng.random() < 0.5)


def log_range(params: Any, head: int) -> int | None:
    """Blocks an ``eth_getLogs`` filter spans (None: a block-hash filter, no range)."""
    if not isinstance(params, list) or not params or not isinstance(params[0], dict):
        return None
    flt = params[0]
    if "blockHash" in flt:
        return None
    start, end = block_tag(flt.get("fromBlock"), head), block_tag(flt.get("toBlock"), head)
    if start is None or end is None:
        return None
    return max(0, end - start + 1)


def block_tag(tag: Any, head: int) -> int | None:
    """A block parameter as a number (``latest`` and friends: the head; absent: the head)."""
    if tag is None or tag in ("latest", "pending", "safe", "finalized"):
        return head
    if tag == "earliest":
        return 0
    if isinstance(tag, str):
        try:
            return int(tag, 16)
        except ValueError:
            return None
    if isinstance(tag, int) and not isinstance(tag, bool):
        return tag
    return None


def stale_params(method: str, params: Any, block: int) -> Any:
    """``params`` of a ``latest`` read rewritten to read ``block`` (pinned reads unchanged)."""
    if not isinstance(params, list):
        return params
    tag = hex(block)
    if method == "eth_getBlockByNumber" and params and params[0] == "latest":
        return [tag, *params[1:]]
    if method == "eth_call":
        if len(params) == 1:
            return [params[0], tag]
        if len(params) >= 2 and params[1] == "latest":
            return [params[0], tag, *params[2:]]
    return params


def rpc_error(req_id: Any, code: int, message: str) -> bytes:
    return json.dumps(
        {"jsonrpc": "2.0", "id": req_id, "error": {"code": code, "message": message}}
    ).encode()


def rpc_result(req_id: Any, result: Any) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": req_id, "result": result}).encode()


@dataclass
class ProxyStats:
    """Requests seen and faults injected by kind (thread-safe counters)."""

    requests: int = 0
    injected: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, kind: str) -> None:
        with self._lock:
            self.requests += 1
            if kind != "pass":
                self.injected[kind] += 1

    def to_json(self) -> dict[str, Any]:
        with self._lock:
            return {"requests": self.requests, "injected": dict(self.injected)}


class RpcFaultProxy:
    """One node's proxy: a loopback HTTP server in a thread of its own."""

    def __init__(
        self,
        upstream: str,
        seed: int,
        *,
        draw: FaultDraw | None = None,
        hold_seconds: float = 16.0,
        range_cap: int = RANGE_CAP,
        upstream_timeout: float = 30.0,
    ) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"the proxy forwards to a plain http:// URL, not {upstream!r}")
        self.upstream = (parts.hostname, parts.port or 80, parts.path or "/")
        self.draw = draw or FaultDraw(seed)
        self.hold_seconds = hold_seconds  # longer than the node's request timeout
        self.range_cap = range_cap
        self.upstream_timeout = upstream_timeout
        self.stats = ProxyStats()
        self._window = threading.Event()
        self._closing = threading.Event()
        self._local = threading.local()
        # where anvil listens: loopback, or the bridge's address when the nodes
        # run in network namespaces (cluster/netns.py), so they reach the proxy too
        self._server = ThreadingHTTPServer((self.upstream[0], 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="rpc-proxy", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> RpcFaultProxy:
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving; a held request is let go at once."""
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def open_window(self) -> None:
        self._window.set()

    def close_window(self) -> None:
        self._window.clear()

    @property
    def window_open(self) -> bool:
        return self._window.is_set()

    # -- the exchange (called from the handler's thread) -----------------------

    def forward(self, body: bytes) -> tuple[int, bytes]:
        """POST ``body`` to anvil on the calling thread's kept-alive connection."""
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        host, port, path = self.upstream
        for attempt in (1, 2):
            if conn is None:
                conn = http.client.HTTPConnection(host, port, timeout=self.upstream_timeout)
            try:
                conn.request("POST", path, body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                self._local.conn = conn = None
                if attempt == 2:
                    raise
                continue
            self._local.conn = conn
            return resp.status, data
        raise AssertionError("unreachable")  # pragma: no cover

    def head(self) -> int:
        status, data = self.forward(
            b'{"jsonrpc":"2.0","id":0,"method":"eth_blockNumber","params":[]}'
        )
        if status != 200:
            raise OSError(f"anvil answered eth_blockNumber with HTTP {status}")
        return int(json.loads(data)["result"], 16)

    def hold(self) -> None:
        """Hold a request past the node's timeout (released early when closing)."""
        self._closing.wait(self.hold_seconds)


Reply = tuple[int, bytes, dict[str, str]] | None  # None: drop the connection unanswered


def answer(proxy: RpcFaultProxy, body: bytes) -> Reply:
    """What the proxy replies to one request body (faults injected and counted)."""
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):  # a batch or not JSON-RPC at all: forwarded as it is
        status, data = proxy.forward(body)
        proxy.stats.count("pass")
        return status, data, {}
    method, params, req_id = str(doc.get("method", "")), doc.get("params", []), doc.get("id")
    if method == "eth_getLogs":
        span = log_range(params, proxy.head())
        if span is not None and span > proxy.range_cap:
            proxy.stats.count("range_cap")
            msg = RANGE_CAP_MESSAGE.format(cap=proxy.range_cap)
            return 200, rpc_error(req_id, -32000, msg), {}
    d = proxy.draw.decide(method, proxy.window_open)
    proxy.stats.count(d.kind)
    if d.kind == "error":
        if d.http_500:
            return 500, b"Internal Server Error", {"Content-Type": "text/plain"}
        return 200, rpc_error(req_id, -32000, "internal error: upstream unavailable"), {}
    if d.kind == "rate_limit":
        limited = rpc_error(req_id, -32005, "rate limit exceeded: too many requests")
        return 429, limited, {"Retry-After": "1"}
    if d.kind == "timeout":
        proxy.hold()
        return None
    if d.kind == "drop":
        proxy.forward(body)
        return None
    if d.kind == "stale":
        block = max(0, proxy.head() - d.lag)
        if method == "eth_blockNumber":
            return 200, rpc_result(req_id, hex(block)), {}
        doc = {**doc, "params": stale_params(method, params, block)}
        body = json.dumps(doc).encode()
    status, data = proxy.forward(body)
    return status, data, {}


def _handler_for(proxy: RpcFaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # kept-alive connections, as the node's client uses

        def do_POST(self) -> None:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if not 0 <= length <= MAX_BODY:
                self._reply(400, b"bad Content-Length", {"Content-Type": "text/plain"})
                return
            body = self.rfile.read(length)
            try:
                reply = answer(proxy, body)
            except (OSError, http.client.HTTPException, ValueError, KeyError):
                reply = (502, b"upstream unavailable", {"Content-Type": "text/plain"})
            if reply is None:
                self._drop()
                return
            self._reply(*reply)

        def _reply(self, status: int, data: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            self.send_header("Content-Type", headers.pop("Content-Type", "application/json"))
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _drop(self) -> None:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the node's own log says what it met

    return Handler


@dataclass
class RpcProxies:
    """One proxy per node of a cluster, all forwarding to one anvil."""

    proxies: dict[str, RpcFaultProxy]

    @classmethod
    def start(cls, upstream: str, names: list[str], seed: int, **kw: Any) -> RpcProxies:
        out: dict[str, RpcFaultProxy] = {}
        for i, name in enumerate(names):
            out[name] = RpcFaultProxy(upstream, seed * 1000 + i, **kw).start()
        return cls(out)

    def close(self) -> None:
        for p in self.proxies.values():
            p.close()

    def window(self, name: str, is_open: bool) -> None:
        p = self.proxies[name]
        (p.open_window if is_open else p.close_window)()

    def to_json(self) -> dict[str, Any]:
        per_node = {name: p.stats.to_json() for name, p in self.proxies.items()}
        total = dict.fromkeys(KINDS, 0)
        for s in per_node.values():
            for k, n in s["injected"].items():
                total[k] += n
        caps = {p.range_cap for p in self.proxies.values()}
        return {"injected": total, "get_logs_range_cap": max(caps, default=0), "nodes": per_node}


def start_for_cluster(state: ClusterState, seed: int) -> RpcProxies:
    """A proxy per node of ``state``, each node's config pointed at its own.

    The node processes read ``chain.rpc_url`` when they start (restarts
    included); the cluster's own reads (monitor, chaos) keep talking to anvil.
    """
    proxies = RpcProxies.start(state.rpc_url, [n.name for n in state.nodes], seed)
    for n in state.nodes:
        path = n.layout.config
        cfg = load_config(path, environ={})
        chain = cfg.chain.model_copy(update={"rpc_url": proxies.proxies[n.name].url})
        atomic_write_text(path, render_config(cfg.model_copy(update={"chain": chain})), mode=0o600)
    return proxies
