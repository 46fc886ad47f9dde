"""The status page: one server-rendered HTML document from a status snapshot.

Pure functions of the snapshot. Everything the page shows is in the document
(inline CSS and SVG, no scripts): a browser loads nothing else, and the
Content-Security-Policy the app sends forbids it to.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from html import escape
from typing import Any

from flocknode.http.svg import Series, line_plot

TOKEN = 10**18
REFRESH_SECONDS = 5

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em auto;max-width:60em;color:#222;padding:0 1em}
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.4em 0 .4em}
.muted{color:#777}.mono{font-family:ui-monospace,monospace;font-size:.9em;word-break:break-all}
.badge{display:inline-block;padding:.15em .6em;border-radius:.8em;font-weight:600}
.ok{background:#d7f5dd;color:#11632a}.bad{background:#fde0dc;color:#8c1d13}
.cards{display:flex;flex-wrap:wrap;gap:.8em}
.card{border:1px solid #ddd;border-radius:.4em;padding:.5em .9em;min-width:9em}
.card b{display:block;font-size:1.3em}
table{border-collapse:collapse}td,th{padding:.15em .8em .15em 0;text-align:left}
th{border-bottom:1px solid #ccc}
.plot text{font-size:11px;fill:#444}.plot .plot-title{font-size:13px;font-weight:600}
"""


def tokens(units: int | None) -> str:
    if units is None:
        return "-"
    return f"{units / TOKEN:,.4f}".rstrip("0").rstrip(".")


def _clock(t: float) -> str:
    return time.strftime("%H:%M", time.localtime(t))


def _clock_for(span: float) -> Callable[[float], str]:
    """A time-of-day format fine enough for ticks over ``span`` seconds."""
    fmt = "%H:%M:%S" if span < 600 else "%H:%M" if span < 86400 else "%m-%d %H:%M"
    return lambda t: time.strftime(fmt, time.localtime(t))


def accuracy_plot(status: dict[str, Any]) -> str:
    acc = status.get("accuracy") or {}
    points = sorted((float(r), float(a) * 100) for r, a in acc.items())
    return line_plot(
        [Series("test accuracy", "#1f6feb", points)],
        element_id="accuracy-plot",
        title="Global model accuracy per round",
        x_label="round",
        y_label="accuracy %",
        y_range=(0.0, 100.0),
        integer_x=True,
    )


def stake_plot(status: dict[str, Any]) -> str:
    history = (status.get("stake") or {}).get("history") or []
    span = history[-1]["at"] - history[0]["at"] if history else 0.0
    series = [
        Series(label, color, [(s["at"], s[key] / TOKEN) for s in history], step=True)
        for label, key, color in (
            ("stake", "stake", "#1f6feb"),
            ("rewards (claimable)", "rewards", "#2da44e"),
            ("slashed", "slashed", "#cf222e"),
        )
    ]
    return line_plot(
        series,
        element_id="stake-plot",
        title="Stake and rewards over time",
        x_label="time",
        y_label="tokens",
        x_format=_clock_for(span),
    )


def _role_rows(status: dict[str, Any]) -> str:
    rows = []
    for r in reversed(status.get("roles") or []):
        rows.append(
            f"<tr><td>{int(r['round'])}</td><td>{escape(str(r['role']))}</td>"
            f"<td>{int(r['seat'])}</td><td>{escape(_clock(float(r['at'])))}</td></tr>"
        )
    if not rows:
        return '<p class="muted">not elected in any round yet</p>'
    return (
        '<table id="role-history"><tr><th>round</th><th>role</th><th>seat</th>'
        "<th>at</th></tr>" + "".join(rows[:50]) + "</table>"
    )


def render_page(status: dict[str, Any], reasons: list[str]) -> str:
    """The whole HTML document."""
    ready = not reasons
    badge = (
        '<span id="ready" class="badge ok">ready</span>'
        if ready
        else '<span id="ready" class="badge bad">not ready</span> '
        + "".join(f'<span class="muted">{escape(r)}; </span>' for r in reasons)
    )
    role = status.get("role")
    role_text = f"{role} (seat {status.get('seat')})" if role else "not elected"
    stake = (status.get("stake") or {}).get("latest") or {}
    peers = status.get("peers") or []
    total = status.get("total_rounds")
    round_text = f"{status.get('round', 0)}" + (f" of {total}" if total else "")
    peer_items = "".join(f'<li class="mono">{escape(str(p))}</li>' for p in peers)
    cards = [
        ("round", round_text),
        ("phase", str(status.get("phase", "none"))),
        ("role", role_text),
        ("peers", f"{len(peers)} of {max(0, int(status.get('members', 0)) - 1)}"),
        ("stake", tokens(stake.get("stake"))),
        ("rewards", tokens(stake.get("rewards"))),
        ("slashed", tokens(stake.get("slashed"))),
    ]
    card_html = "".join(
        f'<div class="card"><span class="muted">{escape(k)}</span>'
        f'<b id="{escape(k)}">{escape(v)}</b></div>'
        for k, v in cards
    )
    err = status.get("last_error")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{REFRESH_SECONDS}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>flocknode · round {escape(round_text)}</title>
<style>{_CSS}</style></head>
<body>
<h1>flocknode {badge}</h1>
<p class="muted">wallet <span class="mono">{escape(str(status.get("wallet", "")))}</span> ·
peer <span class="mono">{escape(str(status.get("peer_id", "")))}</span><br>
task <span class="mono">{escape(str(status.get("task", "")))}</span> ·
block {int(status.get("block", 0))} · up {float(status.get("uptime", 0)) / 60:.0f} min</p>
{f'<p class="bad badge">last error: {escape(str(err))}</p>' if err else ""}
<div class="cards">{card_html}</div>
<h2>Global model</h2>
<p class="mono">{escape(str(status.get("global_model_hash", "")))}
{"(held)" if status.get("holds_global_model") else "(not held yet)"}</p>
{accuracy_plot(status)}
<h2>Stake and rewards</h2>
{stake_plot(status)}
<h2>Role history</h2>
{_role_rows(status)}
<h2>Connected peers</h2>
<ul id="peer-list">{peer_items or '<li class="muted">none</li>'}</ul>
<p class="muted">Refreshes every {REFRESH_SECONDS} s ·
<a href="/status.json">status.json</a> · <a href="/metrics">metrics</a> ·
<a href="/readyz">readyz</a></p>
</body></html>
"""
