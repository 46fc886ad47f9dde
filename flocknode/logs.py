"""Logging set-up: key=value text by default, JSON with --log-format json.

Messages use ``log.info("round opened", extra={"round": 3})``-style fields, which
both formats print as key=value pairs / JSON members. Secrets registered with
``redact()`` (passwords, raw keys) are masked wherever they would appear.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_STD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
_SECRETS: set[str] = set()


def redact(secret: str) -> None:
    """Never let ``secret`` reach a log line (masked as ***)."""
    if secret and len(secret) >= 4:
        _SECRETS.add(secret)


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


def setup_logging(
    level: str = "info", fmt: str = "text", module_levels: dict[str, str] | None = None
) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # libp2p and web3 are chatty at info; their warnings still come through
    for name in ("libp2p", "web3", "urllib3", "multiaddr", "asyncio"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for name, lvl in (module_levels or {}).items():
        logging.getLogger(name).setLevel(lvl.upper())
