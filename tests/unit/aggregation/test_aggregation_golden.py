"""Golden vectors: committed inputs and the expected hash of every rule's output.

A change of machine, numpy/torch build, thread count or code that alters one
bit of any result fails here. The inputs are stored in the JSON itself (hex of
little-endian float32), so the test does not depend on any random generator.
To regenerate after an intended change of a rule (say why in the commit):

    .venv/bin/python tests/unit/aggregation/test_aggregation_golden.py --regenerate
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from flocknode.aggregation import AggregationSettings, aggregate

GOLDEN = Path(__file__).parent / "golden" / "aggregation_v1.json"
HASH_DOC = (
    "sha256 over each tensor in sorted name order: UTF-8 name, NUL, shape as "
    "comma-joined decimals, NUL, the little-endian float32 data"
)


def _digest(model: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(model):
        t = model[name]
        h.update(name.encode() + b"\0" + ",".join(map(str, t.shape)).encode() + b"\0")
        h.update(t.detach().numpy().astype("<f4", copy=False).tobytes())
    return h.hexdigest()


def _encode(model: dict[str, torch.Tensor]) -> dict[str, Any]:
    return {
        name: {"shape": list(t.shape), "hex": t.numpy().astype("<f4").tobytes().hex()}
        for name, t in model.items()
    }


def _decode(obj: dict[str, Any]) -> dict[str, torch.Tensor]:
    out = {}
    for name, spec in obj.items():
        a = np.frombuffer(bytes.fromhex(spec["hex"]), dtype="<f4").reshape(spec["shape"])
        out[name] = torch.from_numpy(a.astype(np.float32))
    return out


def _rule_settings() -> list[AggregationSettings]:
    return [
        AggregationSettings(rule="fedavg"),
        AggregationSettings(rule="median"),
        AggregationSettings(rule="trimmed_mean", trim_ratio=0.2),
        AggregationSettings(rule="trimmed_mean", trim_ratio=0.0),
        AggregationSettings(rule="multi_krum", krum_f=1),
        AggregationSettings(rule="multi_krum", krum_f=2, krum_m=2),
        AggregationSettings(rule="centered_clip", clip_tau=0.05, clip_iterations=3),
        AggregationSettings(rule="centered_clip", clip_tau=1e6, clip_iterations=1),
        AggregationSettings(rule="fedavg", outer_lr=0.5),
        AggregationSettings(rule="median", outer_lr=0.3),
    ]


def _make_cases() -> list[dict[str, Any]]:
    rs = np.random.RandomState(20261126)

    def tensors(shapes: dict[str, tuple[int, ...]], scale: Any) -> dict[str, torch.Tensor]:
        return {
            k: torch.from_numpy((rs.standard_normal(s) * scale).astype(np.float32))
            for k, s in shapes.items()
        }

    cases = []
    # 7 updates, one with a large norm (rejected), signed zeros and ties in coordinate 0.
    shapes = {"layer.weight": (4, 5), "layer.bias": (5,)}
    g = tensors(shapes, 1.0)
    g["layer.bias"][0] = -0.0
    ups = [tensors(shapes, 0.1) for _ in range(7)]
    ups[3] = {k: v * 50 for k, v in ups[3].items()}
    for i, u in enumerate(ups):
        u["layer.bias"][0] = -0.0 if i % 2 else 0.0
        u["layer.weight"][0, 0] = 0.25 if i < 3 else u["layer.weight"][0, 0]
    cases.append({"name": "odd7_one_large", "seats": list(range(7)), "g": g, "ups": ups})
    # 4 updates on non-contiguous seats, coordinate magnitudes spread over 7 decades.
    shapes = {"a": (3, 7), "b": (11,)}
    g = tensors(shapes, 1.0)
    scales = {k: (10.0 ** rs.uniform(-5, 2, size=v.shape)).astype(np.float32) for k, v in g.items()}
    ups = [
        {k: v * torch.from_numpy(scales[k]) for k, v in tensors(shapes, 1.0).items()}
        for _ in range(4)
    ]
    cases.append({"name": "even4_wide_scales", "seats": [1, 2, 4, 7], "g": g, "ups": ups})
    # 5 updates, three tensors, per-coordinate magnitudes from 1e-6 to 1e3.
    shapes = {"conv.w": (8, 3, 3, 3), "fc.w": (10, 32), "fc.b": (10,)}
    g = tensors(shapes, 1.0)
    ups = [
        {
            k: v * torch.from_numpy((10.0 ** rs.uniform(-6, 3, size=v.shape)).astype(np.float32))
            for k, v in tensors(shapes, 1.0).items()
        }
        for _ in range(5)
    ]
    cases.append({"name": "wide5_mixed_magnitudes", "seats": list(range(5)), "g": g, "ups": ups})
    return cases


def regenerate() -> None:
    out: dict[str, Any] = {
        "format": "flocknode aggregation golden vectors v1",
        "hash": HASH_DOC,
        "cases": [],
    }
    for case in _make_cases():
        expect = []
        for s in _rule_settings():
            r = aggregate(case["g"], case["ups"], s, case["seats"])
            expect.append(
                {
                    "settings": s.to_dict(),
                    "sha256": _digest(r.model),
                    "rejected": list(r.rejected),
                    "selected": None if r.selected is None else list(r.selected),
                }
            )
        out["cases"].append(
            {
                "name": case["name"],
                "seats": case["seats"],
                "global": _encode(case["g"]),
                "updates": [_encode(u) for u in case["ups"]],
                "expect": expect,
            }
        )
    GOLDEN.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")


CASE_NAMES = ["odd7_one_large", "even4_wide_scales", "wide5_mixed_magnitudes"]


def _cases() -> list[dict[str, Any]]:
    return json.loads(GOLDEN.read_text())["cases"]


def test_golden_file_has_every_case() -> None:
    assert [c["name"] for c in _cases()] == CASE_NAMES


@pytest.mark.parametrize("name", CASE_NAMES)
def test_golden_vectors(name: str, restore_threads: None) -> None:
    case = next(c for c in _cases() if c["name"] == name)
    g = _decode(case["global"])
    ups = [_decode(u) for u in case["updates"]]
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for exp in case["expect"]:
            s = AggregationSettings.from_dict(exp["settings"])
            r = aggregate(g, ups, s, case["seats"])
            where = f"{case['name']} {exp['settings']} threads={threads}"
            assert _digest(r.model) == exp["sha256"], where
            assert list(r.rejected) == exp["rejected"], where
            assert (None if r.selected is None else list(r.selected)) == exp["selected"], where


def test_golden_vectors_tell_the_rules_apart() -> None:
    """The rules give different outputs on every case, so a mix-up of rules is caught.

    multi_krum with ``krum_f = 2, krum_m = 2`` stands for the rule: with
    ``krum_f = 1`` it averages every survivor of odd7_one_large (the norm
    check's one rejection uses up ``f``), the same as fedavg, as checked below.
    """
    distinct = [s.to_dict() for s in _rule_settings()[:2] + [_rule_settings()[i] for i in (5, 6)]]
    for case in _cases():
        hashes = [e["sha256"] for e in case["expect"] if e["settings"] in distinct]
        assert len(hashes) == 4
        assert len(set(hashes)) == 4, case["name"]
    odd7 = next(c for c in _cases() if c["name"] == "odd7_one_large")["expect"]
    fedavg, krum_f1 = (odd7[0], odd7[4])
    assert (fedavg["settings"]["rule"], krum_f1["settings"]["krum_f"]) == ("fedavg", 1)
    assert krum_f1["selected"] == [0, 1, 2, 4, 5, 6] and krum_f1["sha256"] == fedavg["sha256"]


def test_golden_inputs_exercise_the_norm_check_and_rounding() -> None:
    cases = {c["name"]: c for c in _cases()}
    assert all(e["rejected"] == [3] for e in cases["odd7_one_large"]["expect"])
    # Naive float32 arithmetic (sum in float32, then add) must give different bits
    # from the float64 definition on the mixed-magnitude case, or the case is too tame.
    c = cases["wide5_mixed_magnitudes"]
    g = _decode(c["global"])
    ups = [_decode(u) for u in c["updates"]]
    naive = {k: g[k] + torch.stack([u[k] for u in ups]).sum(0) / len(ups) for k in g}
    fedavg = next(e for e in c["expect"] if e["settings"]["rule"] == "fedavg")
    assert _digest(naive) != fedavg["sha256"]


if __name__ == "__main__":
    if sys.argv[1:] == ["--regenerate"]:
        regenerate()
        print(f"wrote {GOLDEN}")
    else:
        print(__doc__)
