"""Golden vectors of compressed updates: committed packed bytes, the expected decoded
updates and the expected aggregates (docs/protocol.md, "Compressed updates").

The packed updates are stored as the canonical bytes a voter opens (hex), so the
test pins decoding and aggregation, not the proposer's encoder. To regenerate
after an intended change (say why in the commit):

    PYTHONPATH=. .venv/bin/python tests/unit/aggregation/test_compression_golden.py --regenerate
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from flocknode.aggregation import AggregationSettings, aggregate
from flocknode.aggregation.compression import Codec, codec, decode, encode, layout
from flocknode.crypto import canonical_bytes, parse_canonical
from tests.unit.aggregation.conftest import values_digest

GOLDEN = Path(__file__).parent / "golden" / "compressed_v1.json"
COMPRESSIONS = [
    AggregationSettings(compression="int8"),
    AggregationSettings(compression="topk", topk_fraction=0.05, topk_bits=8),
    AggregationSettings(compression="topk", topk_fraction=0.05, topk_bits=2),
]
RULES = [
    AggregationSettings(rule="fedavg"),
    AggregationSettings(rule="median"),
    AggregationSettings(rule="trimmed_mean", trim_ratio=0.2),
    AggregationSettings(rule="centered_clip", clip_tau=0.05, clip_iterations=3),
]


def _global_and_updates() -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]:
    """A BatchNorm-like model over two chunks; 5 updates with magnitudes over 5 decades."""
    rs = np.random.RandomState(20261205)
    shapes = {"conv.w": (4100,), "fc.b": (10,), "bn.running_mean": (8,), "bn.running_var": (8,)}

    def one(scale: float) -> dict[str, torch.Tensor]:
        out = {
            k: torch.from_numpy(
                (rs.standard_normal(s) * scale * 10.0 ** rs.uniform(-3, 2, size=s)).astype(
                    np.float32
                )
            )
            for k, s in shapes.items()
        }
        out["bn.num_batches_tracked"] = torch.tensor(int(rs.randint(0, 1000)))
        return out

    return one(1.0), [one(0.01) for _ in range(5)]


def regenerate() -> None:
    g, ups = _global_and_updates()
    cases = []
    for comp in COMPRESSIONS:
        c = codec(comp)
        assert c is not None
        packed = [encode(u, None, c)[0] for u in ups]
        dense = [decode(p, layout(g), c) for p in packed]
        cases.append(
            {
                "compression": comp.to_dict(),
                "packed_hex": [canonical_bytes(p).hex() for p in packed],
                "decoded_sha256": [values_digest(_f32(d)) for d in dense],
                "aggregates": [
                    {
                        "settings": r.to_dict(),
                        "sha256": values_digest(_f32(aggregate(g, dense, r).model)),
                    }
                    for r in RULES
                ],
            }
        )
    out = {
        "format": "flocknode compressed-update golden vectors v1",
        "global": {k: [list(v.shape), str(v.dtype), _hex(v)] for k, v in g.items()},
        "cases": cases,
    }
    GOLDEN.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")


def _hex(t: torch.Tensor) -> str:
    return t.numpy().astype("<f4" if t.is_floating_point() else "<i8").tobytes().hex()


def _f32(m: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Integer counters as float32 for the shared digest (exact for these values)."""
    return {k: v.to(torch.float32) for k, v in m.items()}


def _load() -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    data = json.loads(GOLDEN.read_text())
    g = {}
    for name, (shape, dtype, hx) in data["global"].items():
        a = np.frombuffer(bytes.fromhex(hx), dtype="<f4" if "float" in dtype else "<i8")
        g[name] = torch.from_numpy(a.copy().reshape(shape))
    return g, data["cases"]


def test_golden_file_covers_each_compression() -> None:
    _, cases = _load()
    assert [c["compression"] for c in cases] == [s.to_dict() for s in COMPRESSIONS]


@pytest.mark.parametrize("i", range(len(COMPRESSIONS)), ids=["int8", "topk8", "topk2"])
def test_compressed_golden_vectors(i: int, restore_threads: None) -> None:
    g, cases = _load()
    case = cases[i]
    c = codec(AggregationSettings.from_dict(case["compression"]))
    assert isinstance(c, Codec)
    for threads in (1, 2):
        torch.set_num_threads(threads)
        dense = [
            decode(parse_canonical(bytes.fromhex(h)), layout(g), c) for h in case["packed_hex"]
        ]
        assert [values_digest(_f32(d)) for d in dense] == case["decoded_sha256"]
        for exp in case["aggregates"]:
            r = AggregationSettings.from_dict(exp["settings"])
            got = values_digest(_f32(aggregate(g, dense, r).model))
            assert got == exp["sha256"], f"{case['compression']} {exp['settings']} {threads}"


def test_the_compressed_cases_differ_from_each_other() -> None:
    _, cases = _load()
    fedavg = [c["aggregates"][0]["sha256"] for c in cases]
    assert len(set(fedavg)) == len(fedavg)


if __name__ == "__main__":
    if sys.argv[1:] == ["--regenerate"]:
        regenerate()
        print(f"wrote {GOLDEN}")
    else:
        print(__doc__)
