"""Pure parts of the HTTP endpoint: readiness reasons, the page and its SVG plots."""

from __future__ import annotations

import re
import time
from typing import Any

from flocknode.http.page import render_page, tokens
from flocknode.http.readiness import CHAIN_STALE_SECONDS, not_ready_reasons
from flocknode.http.svg import Series, _ticks, line_plot
from flocknode.status import NodeStatus


def status(**over: Any) -> NodeStatus:
    """A node's status, built from its JSON form (as another process reads it)."""
    return NodeStatus.from_json(doc(**over))


def doc(**over: Any) -> dict[str, Any]:
    s: dict[str, Any] = {
        "wallet": "0xW",
        "peer_id": "12D3KooWpeer",
        "task": "0xT",
        "uptime": 120.0,
        "round": 4,
        "total_rounds": 10,
        "phase": "commit",
        "role": "voter",
        "seat": 2,
        "block": 99,
        "global_model_hash": "0x" + "ab" * 32,
        "holds_global_model": True,
        "peers": ["12D3KooWa", "12D3KooWb"],
        "members": 5,
        "roles": [
            {"round": 2, "role": "proposer", "seat": 0, "at": time.time() - 60},
            {"round": 4, "role": "voter", "seat": 2, "at": time.time()},
        ],
        "accuracy": {"0": 0.1, "1": 0.62, "2": 0.81, "3": 0.86},
        "chain": {"age_seconds": 0.4, "error": ""},
        "stake": {"latest": None, "history": []},
    }
    s.update(over)
    return s


def test_ready_when_chain_fresh_peer_connected_and_model_held() -> None:
    assert not_ready_reasons(status()) == []


def test_each_unready_condition_has_its_reason() -> None:
    fresh = status(chain={"age_seconds": None, "error": ""})
    assert not_ready_reasons(fresh) == ["chain not read yet"]
    stale = not_ready_reasons(status(chain={"age_seconds": CHAIN_STALE_SECONDS + 1, "error": ""}))
    assert stale == [f"chain unreachable: no successful read for {CHAIN_STALE_SECONDS + 1:.0f} s"]
    down = not_ready_reasons(status(chain={"age_seconds": 3.0, "error": "rpc refused"}))
    assert down == ["chain unreachable: rpc refused"]
    assert not_ready_reasons(status(peers=[])) == ["no peer connected"]
    assert not_ready_reasons(status(holds_global_model=False)) == [
        "does not hold the current global model 0xabababababab"
    ]
    assert len(not_ready_reasons(status(peers=[], holds_global_model=False))) == 2


def test_page_shows_round_role_history_and_plots() -> None:
    html = render_page(status(), [])
    assert '<b id="round">4 of 10</b>' in html
    assert '<b id="role">voter (seat 2)</b>' in html
    assert '<b id="peers">2 of 4</b>' in html
    assert 'id="ready" class="badge ok">ready' in html
    rows = re.findall(r"<tr><td>(\d+)</td><td>(\w+)</td>", html)
    assert rows == [("4", "voter"), ("2", "proposer")]  # newest first
    plot = html[html.index('id="accuracy-plot"') : html.index("</svg>")]
    assert plot.count('class="point"') == 4
    points = re.search(r'points="([^"]+)"', plot)
    assert points is not None
    ys = [float(p.split(",")[1]) for p in points.group(1).split()]
    assert ys == sorted(ys, reverse=True)  # rising accuracy is drawn rising


def test_page_escapes_everything_it_did_not_write() -> None:
    evil = '<script>alert(1)</script>"'
    chain = {"age_seconds": 1.0, "error": evil}
    html = render_page(status(peer_id=evil, peers=[evil], role=evil, chain=chain), ["x<y>"])
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "x&lt;y&gt;" in html


def test_page_loads_nothing_from_anywhere() -> None:
    html = render_page(status(), [])
    urls = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert all(u.startswith(("/", "data:")) for u in urls), urls
    assert "<script" not in html
    external = re.findall(r"https?://[^\s\"']+", html)
    assert all(u == "http://www.w3.org/2000/svg" for u in external), external


def test_empty_and_single_point_plots_render() -> None:
    empty = line_plot(
        [Series("a", "#000", [])], element_id="p", title="t", x_label="x", y_label="y"
    )
    assert "no data yet" in empty and empty.endswith("</svg>")
    one = line_plot(
        [Series("a", "#000", [(3.0, 5.0)])], element_id="p", title="t", x_label="x", y_label="y"
    )
    assert one.count('class="point"') == 1 and "nan" not in one.lower()


def test_stake_plot_steps_and_ticks() -> None:
    t0 = time.time()
    hist = [
        {
            "at": t0,
            "round": 1,
            "stake": 100 * 10**18,
            "rewards": 0,
            "slashed": 0,
            "pending_unstake": 0,
        },
        {
            "at": t0 + 60,
            "round": 2,
            "stake": 100 * 10**18,
            "rewards": 5 * 10**18,
            "slashed": 0,
            "pending_unstake": 0,
        },
    ]
    html = render_page(
        status(stake={"latest": {**hist[-1], "min_stake": 10**19}, "history": hist}), []
    )
    assert '<b id="rewards">5</b>' in html and '<b id="stake">100</b>' in html
    plot = html[html.index('id="stake-plot"') :]
    rewards = re.search(r'data-series="rewards \(claimable\)" points="([^"]+)"', plot)
    assert rewards is not None and len(rewards.group(1).split()) == 3  # a step: 2 points + corner
    assert _ticks(0, 3, 6, 1.0) == [0, 1, 2, 3]
    assert tokens(1234567 * 10**15) == "1,234.567" and tokens(None) == "-"
