"""A loopback TCP proxy in front of anvil that misbehaves on request.

The chain is real; only the wire in between is ours, so the client's retry
logic meets real failures: connections closed before a byte was read, a
response cut off after the node already acted on the request, HTTP 503.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from dataclasses import dataclass, field


@dataclass
class Faults:
    drop_connections: int = 0  # accept, then close at once (client sees a reset/EOF)
    http_503: int = 0  # answer the next requests with 503 without forwarding them
    cut_response_of: bytes = b""  # forward a request containing this, then drop the reply
    cut_count: int = 0
    seen: list[bytes] = field(default_factory=list)  # every forwarded request


class TcpProxy:
    def __init__(self, upstream_port: int, port: int = 0) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.faults = Faults()
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", port))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._closed = False
        self._clients: set[socket.socket] = set()
        self.accepted = 0  # client connections served
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(timeout=2)

    def close_client_connections(self) -> None:
        """Close every kept-alive client connection, as a server drops idle ones."""
        with self._lock:
            clients = list(self._clients)
        for c in clients:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)

    def _take(self, name: str) -> bool:
        with self._lock:
            left = getattr(self.faults, name)
            if left > 0:
                setattr(self.faults, name, left - 1)
                return True
            return False

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            if self._take("drop_connections"):
                linger_zero = struct.pack("ii", 1, 0)  # close() sends RST, not FIN
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger_zero)
                client.close()  # RST: "connection reset by peer"
                continue
            with self._lock:
                self._clients.add(client)
                self.accepted += 1
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.upstream, timeout=10)
        except OSError:
            with self._lock:
                self._clients.discard(client)
            client.close()
            return
        try:
            while True:
                request = _read_http_message(client)
                if request is None:
                    return
                if self._take("http_503"):
                    client.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
                    continue
                with self._lock:
                    self.faults.seen.append(request)
                cut = bool(self.faults.cut_response_of) and self.faults.cut_response_of in request
                upstream.sendall(request)
                response = _read_http_message(upstream)
                if response is None:
                    return
                if cut and self._take("cut_count"):
                    return  # the node acted on it; the client never hears back
                client.sendall(response)
        except OSError:
            return
        finally:
            with self._lock:
                self._clients.discard(client)
            client.close()
            upstream.close()


def _read_http_message(sock: socket.socket) -> bytes | None:
    """One HTTP/1.1 request or response with a Content-Length body, or None at EOF."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        body += chunk
    return head + b"\r\n\r\n" + body
