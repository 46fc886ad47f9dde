"""Logging set-up: key=value text by default, JSON with --log-format json.

Messages use ``log.info("round opened", extra={"round": 3})``-style fields, which
both formats print as key=value pairs / JSON members. Secrets registered with
``redact()`` / ``redact_bytes()`` (passwords, raw keys in their usual text
forms) are masked wherever they would appear: in messages, fields, tracebacks,
Python warnings and uncaught exceptions, which all pass through the formatters.

Levels: one for everything (``[log] level``) and per logger name
(``--log-module libp2p=debug``; a name covers its children).
"""

from __future__ import annotations

import base64
import json
import logging
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterable
from types import TracebackType
from typing import Any

LEVELS = ("debug", "info", "warning", "error")
# Chatty at info: their warnings still come through unless a module level says otherwise.
QUIET_LIBRARIES = ("libp2p", "web3", "urllib3", "multiaddr", "asyncio", "hypercorn.error")

_STD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
_SECRETS: set[str] = set()


def redact(secret: str) -> None:
    """Never let ``secret`` reach a log line (masked as ***)."""
    if secret and len(secret) >= 4:
        _SECRETS.add(secret)


def redact_bytes(secret: bytes) -> None:
    """Mask a binary secret in the text forms it could be logged in (hex, base64)."""
    if len(secret) < 4:
        return
    h = secret.hex()
    for form in (
        h,
        h.upper(),
        "0x" + h,
        base64.b64encode(secret).decode().rstrip("="),
        base64.urlsafe_b64encode(secret).decode().rstrip("="),
    ):
        redact(form)


def _scrub(text: str) -> str:
    for s in _SECRETS:
        if s in text:
            text = text.replace(s, "***")
    return text


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STD_ATTRS and not k.startswith("_")}


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created))
        parts = [
            f"{ts}.{int(record.msecs):03d}",
            f"level={record.levelname.lower()}",
            f"logger={record.name}",
            f"msg={json.dumps(record.getMessage())}",
        ]
        for k, v in _fields(record).items():
            sv = v if isinstance(v, int | float) else json.dumps(str(v))
            parts.append(f"{k}={sv}")
        if record.exc_info:
            parts.append(f"exc={json.dumps(self.formatException(record.exc_info))}")
        return _scrub(" ".join(parts))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": record.created,
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in _fields(record).items():
            doc[k] = v if isinstance(v, int | float | bool | type(None)) else str(v)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return _scrub(json.dumps(doc))


def parse_module_levels(specs: Iterable[str]) -> dict[str, str]:
    """``["libp2p=debug", "flocknode.p2p=warning"]`` -> {name: level} (ValueError if malformed)."""
    out: dict[str, str] = {}
    for spec in specs:
        name, sep, level = spec.partition("=")
        level = level.strip().lower()
        if not sep or not name.strip() or level not in LEVELS:
            raise ValueError(
                f"{spec!r}: expected MODULE=LEVEL with LEVEL one of {', '.join(LEVELS)}"
            )
        out[name.strip()] = level
    return out


def _log_uncaught(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, exc, tb)
        return
    logging.getLogger("flocknode").critical("uncaught exception", exc_info=(kind, exc, tb))


def setup_logging(
    level: str = "info", fmt: str = "text", module_levels: dict[str, str] | None = None
) -> None:
    _adopt_libp2p()  # before the levels: importing libp2p sets its own
    limit_library_logs()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    for name, lvl in (module_levels or {}).items():
        logging.getLogger(name).setLevel(lvl.upper())
    logging.captureWarnings(True)  # warnings.warn output goes through the formatter too
    sys.excepthook = _log_uncaught


def _adopt_libp2p() -> None:
    """Route py-libp2p's records through our handler.

    ``import libp2p`` detaches its logger (``propagate = False``, no handler)
    unless LIBP2P_DEBUG is set, so its warnings and errors would reach stderr
    through logging's last-resort handler: unformatted and unredacted. Import
    it first (every command does anyway), then attach it to the root again.
    """
    import libp2p  # noqa: F401  (runs its logging set-up now, not later)

    lib = logging.getLogger("libp2p")
    lib.handlers.clear()
    lib.propagate = True


class LineBudget:
    """At most ``burst`` lines per ``interval`` seconds for each kind of line.

    ``take(kind)`` is None when the line must be held back (it is counted), else
    how many lines of that kind were held back since the last one that passed.
    """

    def __init__(
        self, burst: int = 10, interval: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._burst, self._interval, self._clock = burst, interval, clock
        self._window: dict[Hashable, tuple[float, int, int]] = {}  # kind -> (start, logged, held)
        self._lock = threading.Lock()  # logging may be called from worker threads

    def take(self, kind: Hashable) -> int | None:
        with self._lock:
            now = self._clock()
            start, logged, held = self._window.get(kind, (now, 0, 0))
            if now - start >= self._interval:
                start, logged = now, 0
            if logged >= self._burst:
                self._window[kind] = (start, logged, held + 1)
                return None
            self._window[kind] = (start, logged + 1, 0)
            return held


class PeerLog:
    """A logger for lines that other peers can cause (a connection refused, a bad frame).

    Each call names its kind (a fixed string, never peer input); a kind logs at
    most ``burst`` lines per ``interval`` seconds, so a peer reconnecting in a loop
    cannot flood the journal. The lines held back are counted and reported as
    ``suppressed=N`` on the next line of that kind that passes. Counters by reason
    (metrics) still see every event.
    """

    def __init__(
        self,
        logger: logging.Logger,
        burst: int = 10,
        interval: float = 60.0,
        clock: Any = time.monotonic,
    ) -> None:
        self._log = logger
        self._budget = LineBudget(burst, interval, clock)

    def log(self, level: int, kind: str, msg: str, *args: object) -> None:
        if not self._log.isEnabledFor(level):
            return
        held = self._budget.take(kind)
        if held is None:
            return
        if held:
            msg, args = msg + " suppressed=%d", (*args, held)
        self._log.log(level, msg, *args)

    def info(self, kind: str, msg: str, *args: object) -> None:
        self.log(logging.INFO, kind, msg, *args)

    def warning(self, kind: str, msg: str, *args: object) -> None:
        self.log(logging.WARNING, kind, msg, *args)


LIBRARY_LOGGERS = ("libp2p",)  # libraries whose lines peers can cause


class LibraryLogLimiter(logging.Filter):
    """The PeerLog budget for a library's own records (py-libp2p logs per message).

    A record's kind is where it was logged from (logger name and line: a fixed
    set, never peer input). Records at ``min_level`` and above get at most
    ``burst`` lines per ``interval`` per kind; the next one that passes carries
    ``suppressed=N`` as a field, and ``suppressed`` counts every record held
    back, by logger. Debug records (asked for by the operator) all pass.
    """

    def __init__(
        self,
        burst: int = 10,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        min_level: int = logging.INFO,
    ) -> None:
        super().__init__()
        self._budget = LineBudget(burst, interval, clock)
        self._min_level = min_level
        self.suppressed: Counter[str] = Counter()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self._min_level:
            return True
        held = self._budget.take((record.name, record.lineno))
        if held is None:
            self.suppressed[record.name] += 1
            return False
        if held:
            record.suppressed = held
        return True


LIBRARY_LOG_LIMITER = LibraryLogLimiter()


def limit_library_logs(limiter: logging.Filter = LIBRARY_LOG_LIMITER) -> None:
    """Attach ``limiter`` to every logger of ``LIBRARY_LOGGERS`` that exists now.

    A filter acts on the records its own logger emits (not those propagated from
    children), so it goes on each of them; call again after more of the library
    is imported (idempotent).
    """
    names = [n for n in logging.root.manager.loggerDict if n.split(".")[0] in LIBRARY_LOGGERS]
    for name in {*names, *LIBRARY_LOGGERS}:
        logger = logging.getLogger(name)
        if limiter not in logger.filters:
            logger.addFilter(limiter)
