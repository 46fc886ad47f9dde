"""The status page: one server-rendered HTML document from a status snapshot.

Pure functions of the snapshot. Everything the page shows is in the document
(inline CSS and SVG, no scripts): a browser loads nothing else, and the
Content-Security-Policy the app sends forbids it to.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from html import escape

from flocknode.http.svg import Series, line_plot
from flocknode.status import NodeStatus

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


def accuracy_plot(status: NodeStatus) -> str:
    points = sorted((float(r), a * 100) for r, a in status.model.accuracy.items())
    return line_plot(
        [Series("test accuracy", "#1f6feb", points)],
        element_id="accuracy-plot",
        title="Global model accuracy per round",
        x_label="round",
        y_label="accuracy %",
        y_range=(0.0, 100.0),
        integer_x=True,
    )


def stake_plot(status: NodeStatus) -> str:
    history = status.stake.history
    span = history[-1].at - history[0].at if history else 0.0
    series = [
        Series("stake", "#1f6feb", [(s.at, s.stake / TOKEN) for s in history], step=True),
        Series(
            "rewards (claimable)", "#2da44e", [(s.at, s.rewards / TOKEN) for s in history], True
        ),
        Series("slashed", "#cf222e", [(s.at, s.slashed / TOKEN) for s in history], step=True),
    ]
    return line_plot(
        series,
        element_id="stake-plot",
        title="Stake and rewards over time",
        x_label="time",
        y_label="tokens",
        x_format=_clock_for(span),
    )


def _role_rows(status: NodeStatus) -> str:
    rows = []
    for r in reversed(status.roles):
        rows.append(
            f"<tr><td>{r.round}</td><td>{escape(r.role)}</td>"
            f"<td>{r.seat}</td><td>{escape(_clock(r.at))}</td></tr>"
        )
    if not rows:
        return '<p class="muted">not elected in any round yet</p>'
    return (
        '<table id="role-history"><tr><th>round</th><th>role</th><th>seat</th>'
        "<th>at</th></tr>" + "".join(rows[:50]) + "</table>"
    )


def render_page(status: NodeStatus, reasons: list[str]) -> str:
    """The whole HTML document."""
    ready = not reasons
    badge = (
        '<span id="ready" class="badge ok">ready</span>'
        if ready
        else '<span id="ready" class="badge bad">not ready</span> '
        + "".join(f'<span class="muted">{escape(r)}; </span>' for r in reasons)
    )
    rnd = status.round
    role_text = f"{rnd.role} (seat {rnd.seat})" if rnd.role else "not elected"
    stake = status.stake.latest
    peers = status.p2p.peers
    round_text = f"{rnd.number}" + (f" of {rnd.total}" if rnd.total else "")
    peer_items = "".join(f'<li class="mono">{escape(p)}</li>' for p in peers)
    cards = [
        ("round", round_text),
        ("phase", rnd.phase),
        ("role", role_text),
        ("peers", f"{len(peers)} of {max(0, status.p2p.members - 1)}"),
        ("stake", tokens(stake.stake if stake else None)),
        ("rewards", tokens(stake.rewards if stake else None)),
        ("slashed", tokens(stake.slashed if stake else None)),
    ]
    card_html = "".join(
        f'<div class="card"><span class="muted">{escape(k)}</span>'
        f'<b id="{escape(k)}">{escape(v)}</b></div>'
        for k, v in cards
    )
    err = status.chain.error
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{REFRESH_SECONDS}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>flocknode · round {escape(round_text)}</title>
<style>{_CSS}</style></head>
<body>
<h1>flocknode {badge}</h1>
<p class="muted">wallet <span class="mono">{escape(status.wallet)}</span> ·
peer <span class="mono">{escape(status.peer_id)}</span><br>
task <span class="mono">{escape(status.task)}</span> ·
block {status.chain.block} · up {status.uptime / 60:.0f} min</p>
{f'<p class="bad badge">last error: {escape(err)}</p>' if err else ""}
<div class="cards">{card_html}</div>
<h2>Global model</h2>
<p class="mono">{escape(status.model.global_hash)}
{"(held)" if status.model.held else "(not held yet)"}</p>
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
