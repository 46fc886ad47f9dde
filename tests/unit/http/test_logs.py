"""Log set-up: key material is masked in every text form and every path to stderr."""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import sys
import textwrap

import pytest

from flocknode.logs import (
    JsonFormatter,
    KeyValueFormatter,
    parse_module_levels,
    redact,
    redact_bytes,
)

SECRET = bytes(range(100, 132))


def record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    r = logging.LogRecord("flocknode.test", logging.INFO, __file__, 1, msg, args, None)
    for k, v in extra.items():
        setattr(r, k, v)
    return r


@pytest.mark.parametrize(
    "form",
    [
        SECRET.hex(),
        SECRET.hex().upper(),
        "0x" + SECRET.hex(),
        base64.b64encode(SECRET).decode(),
        base64.urlsafe_b64encode(SECRET).decode(),
    ],
)
def test_binary_secrets_are_masked_in_both_formats(form: str) -> None:
    plain = record("key=%s", form, field=form)
    assert form in plain.getMessage()  # control: the record does carry the secret
    redact_bytes(SECRET)
    for fmt in (KeyValueFormatter(), JsonFormatter()):
        line = fmt.format(record("key=%s", form, field=form))
        assert form.rstrip("=") not in line and "***" in line


def test_password_masked_in_tracebacks() -> None:
    redact("hunter2-the-password")
    try:
        raise ValueError("bad password hunter2-the-password")
    except ValueError:
        r = record("failed")
        r.exc_info = sys.exc_info()
    line = KeyValueFormatter().format(r)
    assert "hunter2-the-password" not in line and "ValueError" in line
    doc = json.loads(JsonFormatter().format(r))
    assert "hunter2" not in doc["exc"]


def test_module_levels_parse_and_reject() -> None:
    assert parse_module_levels(["libp2p=debug", " flocknode.p2p = WARNING"]) == {
        "libp2p": "debug",
        "flocknode.p2p": "warning",
    }
    for bad in ("libp2p", "=debug", "libp2p=loud"):
        with pytest.raises(ValueError, match="MODULE=LEVEL"):
            parse_module_levels([bad])


def test_cli_process_routes_libp2p_warnings_and_crashes_through_the_formatter() -> None:
    """In a real process: py-libp2p's records, warnings.warn and an uncaught exception
    all come out formatted (JSON here) and scrubbed, nothing raw on stderr."""
    code = textwrap.dedent(
        """
        import logging, warnings
        from flocknode.logs import setup_logging, redact
        setup_logging("info", "json", {"libp2p.transport": "debug"})
        redact("s3cr3t-value")
        logging.getLogger("libp2p.transport.tcp").debug("dial with s3cr3t-value")
        warnings.warn("careful s3cr3t-value")
        raise RuntimeError("boom s3cr3t-value")
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "LIBP2P_DEBUG"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 1
    lines = [json.loads(line) for line in out.stderr.splitlines() if line.strip()]
    loggers = [d["logger"] for d in lines]
    assert "libp2p.transport.tcp" in loggers and "py.warnings" in loggers
    assert lines[-1]["level"] == "critical" and "RuntimeError" in lines[-1]["exc"]
    assert "s3cr3t-value" not in out.stderr


def test_peer_log_limits_each_kind_and_reports_what_it_held(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from flocknode.logs import PeerLog

    now = [0.0]
    plog = PeerLog(
        logging.getLogger("flocknode.test.peerlog"), burst=3, interval=60.0, clock=lambda: now[0]
    )
    with caplog.at_level(logging.INFO, logger="flocknode.test.peerlog"):
        for i in range(100):  # a peer reconnecting in a loop
            plog.info("not_member", "closing connection peer=%s", i)
        plog.info("bad_frame", "bad frame peer=%s", "x")  # another kind has its own budget
        assert [r.getMessage() for r in caplog.records] == [
            "closing connection peer=0",
            "closing connection peer=1",
            "closing connection peer=2",
            "bad frame peer=x",
        ]
        caplog.clear()
        now[0] = 61.0  # the next window: the first line says how many were held back
        plog.info("not_member", "closing connection peer=%s", 100)
        plog.info("not_member", "closing connection peer=%s", 101)
        assert [r.getMessage() for r in caplog.records] == [
            "closing connection peer=100 suppressed=97",
            "closing connection peer=101",
        ]
