"""The ``bounded_growth`` invariant (docs/protocol.md, "Faults and the promises
kept under them"): pure judgement of per-round samples, and the sampler on a
real process tree and a real directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from flocknode.cluster.resources import Usage, growth, sample


def flat(rounds: int, nodes: tuple[str, ...] = ("a", "b")) -> dict[int, dict[str, Usage]]:
    return {r: {n: Usage(300.0, 40, 2.0) for n in nodes} for r in range(1, rounds + 1)}


def test_steady_usage_holds_and_reports_peaks() -> None:
    usage = flat(30)
    usage[5]["a"] = Usage(380.0, 50, 2.5)  # warm-up bumps are not growth
    check = growth(usage, keep_rounds=16)
    assert check["ok"] and check["assessed"] and check["disk_assessed"], check
    assert (check["peak_rss_mb"], check["peak_fds"], check["peak_disk_mb"]) == (380.0, 50, 2.5)


def test_memory_that_keeps_climbing_is_growth() -> None:
    usage = flat(9)
    for r in (7, 8, 9):  # the last third
        usage[r]["b"] = Usage(300.0 + 60 * r, 40, 2.0)
    check = growth(usage, keep_rounds=16)
    assert not check["ok"]
    assert check["grew"] == ["b: memory 300 -> 840 MB"]


def test_leaked_descriptors_are_growth_within_the_slack_they_are_not() -> None:
    usage = flat(6)
    usage[6]["a"] = Usage(300.0, 40 + 16, 2.0)
    assert growth(usage, keep_rounds=16)["ok"]
    usage[6]["a"] = Usage(300.0, 40 + 17, 2.0)
    assert growth(usage, keep_rounds=16)["grew"] == ["a: descriptors 40 -> 57"]


def test_disk_is_judged_only_past_the_retention_window() -> None:
    # the store grows one MB a round: within the window that is retention at work
    growing = {r: {"a": Usage(300.0, 40, float(r))} for r in range(1, 9)}
    check = growth(growing, keep_rounds=4)
    assert check["ok"] and not check["disk_assessed"]
    # past the window (4 + 3 rounds) it must level off; here it does not
    growing = {r: {"a": Usage(300.0, 40, float(r))} for r in range(1, 21)}
    check = growth(growing, keep_rounds=4)
    assert check["disk_assessed"] and check["grew"] == ["a: disk 7.0 -> 20.0 MB"]
    # keep_rounds = 0 keeps everything: disk growth is what was asked for
    assert growth(growing, keep_rounds=0)["ok"]


def test_short_runs_and_absent_nodes_say_nothing() -> None:
    assert growth(flat(2), keep_rounds=16) == {
        "ok": True,
        "assessed": False,
        "rounds_sampled": 2,
        "grew": [],
    }
    usage = flat(6)
    for r in (5, 6):
        del usage[r]["b"]  # down at the end: no late samples to compare
    assert growth(usage, keep_rounds=16, nodes=["a", "b", "c"])["ok"]


def test_sample_counts_the_process_tree_and_the_data_on_disk(tmp_path: Path) -> None:
    store, journal = tmp_path / "store", tmp_path / "journal"
    store.mkdir()
    journal.mkdir()
    (store / "obj").write_bytes(b"x" * (1 << 20))
    (journal / "rec").write_bytes(b"y" * (1 << 19))
    alone = sample(os.getpid(), store, journal)
    assert alone is not None and alone.disk_mb == 1.5 and alone.fds > 0
    # a child holding 200 MB resident counts towards its parent's tree
    code = "import sys; b = b'1' * (200 << 20); sys.stdout.write('r'); sys.stdout.flush(); input()"
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert child.stdout is not None and child.stdout.read(1) == b"r"
        with_child = sample(os.getpid(), store, journal)
        assert with_child is not None and with_child.rss_mb >= alone.rss_mb + 150
    finally:
        child.kill()
        child.wait()


def test_sample_of_a_process_that_is_gone_is_none(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert sample(gone.pid, tmp_path, tmp_path) is None
