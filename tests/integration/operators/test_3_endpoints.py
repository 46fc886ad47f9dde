"""/metrics (parsed with prometheus-client's parser), /healthz, /readyz and /status.json
of the real cluster's nodes, checked against the chain and each other."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.operators.conftest import SPEC
from tests.integration.operators.operators_cluster import OperatorCluster

pytestmark = pytest.mark.integration


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode()


def scrape(url: str) -> dict[str, Any]:
    code, ctype, text = get(url + "/metrics")
    assert code == 200 and ctype.startswith("text/plain"), (code, ctype)
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(families: dict[str, Any], name: str, sample: str = "", **labels: str) -> float:
    """The sample ``sample`` (default: the family's own or its _total) with ``labels``."""
    names = (sample,) if sample else (name, name + "_total")
    for s in families[name].samples:
        if s.name in names and all(s.labels.get(k) == v for k, v in labels.items()):
            return float(s.value)
    raise AssertionError(f"no sample {names}{labels}")


def test_metrics_health_and_readiness_of_every_node(settled: OperatorCluster) -> None:
    h = settled
    elected_as: dict[str, set[str]] = {"proposer": set(), "voter": set()}
    restarted = {name for name, _, _ in h.stop_seconds}
    for n in h.state.nodes:
        code, _, body = get(n.http_url + "/healthz")
        assert code == 200 and json.loads(body)["status"] == "alive"
        code, _, body = get(n.http_url + "/readyz")
        assert code == 200 and json.loads(body) == {"ready": True, "reasons": []}, body
        status = json.loads(get(n.http_url + "/status.json")[2])
        m = scrape(n.http_url)

        assert m["flocknode_round"].type == "gauge"
        assert value(m, "flocknode_round") == SPEC.rounds
        assert value(m, "flocknode_total_rounds") == SPEC.rounds
        assert value(m, "flocknode_phase", phase="finalized") == 1
        assert sum(s.value for s in m["flocknode_phase"].samples) == 1
        assert sum(s.value for s in m["flocknode_role"].samples) == 1
        assert value(m, "flocknode_ready") == 1
        assert value(m, "flocknode_peers") == len(status["peers"]) >= 1
        assert m["flocknode_gossip_received"].type == "counter"
        assert value(m, "flocknode_gossip_received") > 0
        assert value(m, "flocknode_gossip_published") > 0  # every node announces the model
        if n.name not in restarted:  # counters start at zero with each process
            assert value(m, "flocknode_bytes_received") > 0  # it fetched a global model
        assert "flocknode_gossip_dropped" in m and "flocknode_chain_tx_failures" in m
        # stake and slashes as the chain has them: the node reads them every 10 s
        # (StakeHistory), so a slash in the last round shows within that
        me = h.client.participant(n.wallet)

        want = (me.stake / 10**18, me.slashed / 10**18)

        def stake_shown(url: str = n.http_url, want: tuple[float, float] = want) -> bool:
            got = scrape(url)
            shown = (value(got, "flocknode_stake_tokens"), value(got, "flocknode_slashed_tokens"))
            return shown == want

        h.wait(f"{n.name}'s metrics to show its stake on chain", stake_shown, 40, poll=0.5)
        for r in status["roles"]:
            elected_as[r["role"]].add(n.name)
        if any(r["role"] == "voter" for r in status["roles"]):
            tx = m["flocknode_chain_tx_seconds"]
            assert tx.type == "histogram"
            counts = {s.labels["action"]: s.value for s in tx.samples if s.name.endswith("_count")}
            assert counts.get("revealVote", 0) >= 1, counts
            # a restarted voter may have committed before its restart (counters are per run)
            assert n.name in restarted or counts.get("commitVote", 0) >= 1, counts
            if n.name not in restarted:
                assert value(m, "flocknode_eval_seconds", "flocknode_eval_seconds_count") >= 1
        if any(r["role"] == "proposer" for r in status["roles"]):
            assert value(m, "flocknode_train_seconds", "flocknode_train_seconds_count") >= 1
            assert value(m, "flocknode_bytes_sent") > 0  # served its update to the voters
    assert elected_as["proposer"] and elected_as["voter"]


def test_unknown_paths_and_methods_are_clean_errors(settled: OperatorCluster) -> None:
    url = settled.url("node-0")
    assert get(url + "/nope")[0] == 404
    req = urllib.request.Request(url + "/metrics", data=b"x" * 1000, method="POST")
    try:
        urllib.request.urlopen(req, timeout=10)
        raise AssertionError("POST accepted")
    except urllib.error.HTTPError as e:
        assert e.code == 405
    assert get(url + "/healthz")[0] == 200  # still serving
