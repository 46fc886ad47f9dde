"""Gas of every FlockTask call at 10, 50 and 100 participants (5 proposers + 5 voters).

    .venv/bin/python bench/gas.py          # a readable table
    .venv/bin/python bench/gas.py --json   # one JSON object
    .venv/bin/python bench/gas.py --worst  # also 64 + 64 seats, 999 wallets (minutes)

Deploys a fresh token + task per size on a fresh anvil (automine) and reads
gasUsed from the receipts. Checks the limits of issue 2: electRoles with 100
eligible and 10 roles under 2,000,000; finalizeRound with 5 proposers and 5
voters under 1,000,000 (every finalize scenario below). Exit code 1 if a limit
is missed. ``--worst`` adds the largest allowed round size against EIP-7825's
per-transaction cap of 2^24 gas.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from eth_utils import keccak, to_checksum_address  # noqa: E402
from web3 import Web3  # noqa: E402

from tests.fixtures.anvil import anvil  # noqa: E402
from tests.fixtures.contracts import ETHER, Harness, NoReveal, Vote  # noqa: E402

SIZES = (10, 50, 100)
PROPOSERS = 5
VOTERS = 5
STAKE = 200 * ETHER
LIMITS = {"electRoles@100": 2_000_000, "finalizeRound(max)": 1_000_000}
EIP7825_TX_CAP = 2**24
WORST = (64, 64, 999)  # proposers, voters, participants
AGG = b"\xa1" * 32
EVICTION_GRACE = 600  # FlockTask: seconds a new registration has to stake


def measure(w3: Web3, accounts: tuple[str, ...], n: int) -> dict[str, Any]:
    h = Harness.deploy(
        w3,
        accounts[0],
        proposersPerRound=PROPOSERS,
        votersPerRound=VOTERS,
        totalRounds=100,
        maxParticipants=max(n, 16),
    )
    wallets = list(accounts[1 : 1 + n])
    h.join(wallets, STAKE)
    h.fund_rewards(1000 * ETHER)
    gas: dict[str, int | dict[str, int]] = {}

    def one(label: str, fn: Any, sender: str) -> None:
        gas[label] = int(h.send(fn, sender, label=label)["gasUsed"])

    one(
        "updateMultiaddrs",
        h.task.functions.updateMultiaddrs(["/ip4/127.0.0.1/tcp/9999"]),
        wallets[0],
    )
    h.send(h.token.functions.mint(wallets[0], ETHER), h.deployer)
    one("stake (top-up)", h.task.functions.stake(ETHER), wallets[0])

    # --- participant exits (before any round, so nothing is locked)
    one("requestUnstake", h.task.functions.requestUnstake(10 * ETHER), wallets[-1])
    one("withdraw", h.task.functions.withdraw(), wallets[-1])

    # --- scenario 1: everyone acts and agrees (accepted, 10 rewards)
    r = _open(h, gas, "openRound")
    _elect(h, gas, r, "electRoles")
    rv = h.round(r)
    for p in rv.proposers:
        h.send(
            h.task.functions.submitUpdate(r, b"\x01" * 32, b"\x02" * 32, 1000),
            p,
            label="submitUpdate",
        )
    vote = Vote(AGG, (1 << PROPOSERS) - 1, score=10)
    for v in rv.voters:
        h.send(h.task.functions.commitVote(r, h.commitment(r, v, vote)), v, label="commitVote")
    for v in rv.voters:
        h.send(h.reveal_fn(r, vote), v, label="revealVote")
    one("finalizeRound (all agree, accepted)", h.task.functions.finalizeRound(r), accounts[0])
    one("claimRewards", h.task.functions.claimRewards(), rv.voters[0])

    # --- scenario 2: mixed misconduct (idle, norm-rejected, no reveal, wrong aggregate)
    r = _open(h, gas, None)
    _elect(h, gas, r, None)
    included = 0b00111
    votes: list[Vote | NoReveal | None] = [
        Vote(AGG, included, rejected=0b00100, flags=0b1),
        Vote(AGG, included, rejected=0b00100, flags=0b1),
        Vote(AGG, included, rejected=0b00100),
        NoReveal(Vote(AGG, included)),
        Vote(b"\xee" * 32, included, rejected=0b00100),
    ]
    h.play(r, votes, submits=[True, True, True, False, False], finalize=False)
    one("finalizeRound (mixed slashes)", h.task.functions.finalizeRound(r), accounts[0])

    # --- scenario 3: nobody acts (10 idle slashes), finalized by openRound
    r = _open(h, gas, None)
    _elect(h, gas, r, None)
    params = h.params()
    h.advance(params.trainSeconds + params.commitSeconds)
    one("finalizeRound (nobody acted)", h.task.functions.finalizeRound(r), accounts[0])

    # --- scenario 4: openRound that first finalizes the previous round
    r = _open(h, gas, None)
    _elect(h, gas, r, None)
    h.play(r, [vote] * VOTERS, finalize=False)
    one("openRound (finalizes previous)", h.task.functions.openRound(), accounts[0])

    # --- scenario 5: electRoles after the seed expired (void + reopen)
    r = int(h.task.functions.currentRound().call())
    h.mine(h.round(r).seedBlock + 257 - h.w3.eth.block_number)
    one("electRoles (seed expired: void + reopen)", h.task.functions.electRoles(r), accounts[0])

    # views: what one eth_call costs a node (estimated)
    r = int(h.task.functions.currentRound().call())
    gas["getRound (view)"] = int(h.task.functions.getRound(r).estimate_gas())
    gas["participants(0, n) (view)"] = int(h.task.functions.participants(0, n).estimate_gas())

    # --- scenario 6: the voters find the current model unservable (round 4 adopted
    # it): the model rolls back one step, round 4's 5 winners are slashed
    r = int(h.task.functions.currentRound().call())
    _elect(h, gas, r, None)
    unavailable = Vote(b"\x00" * 32, 0)
    h.play(r, [unavailable] * VOTERS, submits=[False] * PROPOSERS, finalize=False)
    one("finalizeRound (unavailable: rollback)", h.task.functions.finalizeRound(r), accounts[0])

    # --- scenario 7: a registration into a full registry evicts one without stake,
    # found after scanning every staked registration before it
    limit = int(h.params().maxParticipants)
    squatters = [_address(b"squatter", i) for i in range(limit - n)]
    for wallet in squatters:
        h.impersonate(wallet)
        sq = h.make_participant(wallet)
        fn = h.task.functions.register(sq.peer_id, sq.box_key, sq.multiaddrs, sq.peer_sig)
        h.send(fn, wallet, label="register (squatter)")
    if not squatters:  # full already: the last registration leaves
        h.send(h.task.functions.requestUnstake(h.stake_of(wallets[-1])), wallets[-1])
        _open(h, gas, None)  # its stake no longer counts from this round on
    h.advance(EVICTION_GRACE)
    newcomer = _address(b"newcomer", 0)
    h.impersonate(newcomer)
    p = h.make_participant(newcomer)
    fn = h.task.functions.register(p.peer_id, p.box_key, p.multiaddrs, p.peer_sig)
    one(f"register (evicts after scanning {n})", fn, newcomer)

    # repeated calls: median and max
    for label in ("register", "stake", "submitUpdate", "commitVote", "revealVote", "fundRewards"):
        values = h.gas.get(label, [])
        if values:
            gas[label] = {"median": int(statistics.median(values)), "max": max(values)}
    return gas


def _address(tag: bytes, i: int) -> str:
    return to_checksum_address(keccak(tag + i.to_bytes(4, "big"))[:20])


def _open(h: Harness, gas: dict[str, Any], label: str | None) -> int:
    receipt = h.send(h.task.functions.openRound(), h.deployer, label="openRound")
    if label:
        gas[label] = int(receipt["gasUsed"])
    return int(h.task.functions.currentRound().call())


def _elect(h: Harness, gas: dict[str, Any], r: int, label: str | None) -> None:
    receipt = h.elect(r)
    if label:
        gas[label] = int(receipt["gasUsed"])


def measure_worst(w3: Web3, accounts: tuple[str, ...]) -> dict[str, int]:
    """electRoles, getRound and finalizeRound at the largest allowed round size."""
    n_p, n_v, n = WORST
    h = Harness.deploy(
        w3, accounts[0], proposersPerRound=n_p, votersPerRound=n_v, maxParticipants=1024
    )
    last = None
    for wallet in accounts[1 : 1 + n]:  # fire and forget: automine keeps the order
        p = h.make_participant(wallet)
        calls = [
            (h.deployer, h.token, h.token.encode_abi("mint", [wallet, STAKE])),
            (wallet, h.token, h.token.encode_abi("approve", [h.task.address, 2**256 - 1])),
            (
                wallet,
                h.task,
                h.task.encode_abi("register", [p.peer_id, p.box_key, p.multiaddrs, p.peer_sig]),
            ),
            (wallet, h.task, h.task.encode_abi("stake", [STAKE])),
        ]
        for sender, contract, data in calls:
            tx = {"from": sender, "to": contract.address, "data": data, "gas": 600_000}
            last = w3.eth.send_transaction(tx)  # type: ignore[arg-type]
    assert last is not None and w3.eth.wait_for_transaction_receipt(last)["status"] == 1
    assert h.task.functions.eligibleCount().call() == n
    r = h.open_round()
    out = {"electRoles": int(h.elect(r)["gasUsed"])}
    out["getRound (view)"] = int(h.task.functions.getRound(r).estimate_gas())
    rv = h.round(r)
    vote = Vote(AGG, (1 << n_p) - 1, score=1)
    for proposer in rv.proposers:
        h.submit(r, proposer)
    for voter in rv.voters:
        h.commit(r, voter, vote)
    for voter in rv.voters:
        h.reveal(r, voter, vote)
    out["finalizeRound (all agree)"] = int(h.finalize(r)["gasUsed"])
    return out


def check_limits(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    elect100 = results["100"]["electRoles"]
    finalize_max = max(
        v
        for size in results.values()
        for k, v in size.items()
        if k.startswith("finalizeRound") and isinstance(v, int)
    )
    return {
        "electRoles@100": {
            "gas": elect100,
            "limit": LIMITS["electRoles@100"],
            "ok": elect100 < LIMITS["electRoles@100"],
        },
        "finalizeRound(max)": {
            "gas": finalize_max,
            "limit": LIMITS["finalizeRound(max)"],
            "ok": finalize_max < LIMITS["finalizeRound(max)"],
        },
    }


def sizes_from_artifacts() -> dict[str, int]:
    out = {}
    for name in ("FlockToken", "FlockTask"):
        art = json.loads((ROOT / "flocknode" / "chain" / "artifacts" / f"{name}.json").read_text())
        out[name] = len(art["deployedBytecode"]) // 2 - 1
    return out


def print_table(report: dict[str, Any]) -> None:
    results = report["gas"]
    labels: list[str] = []
    for size in results.values():
        for k in size:
            if k not in labels:
                labels.append(k)
    width = max(len(k) for k in labels) + 2
    head = "".join(f"{s + ' participants':>22}" for s in results)
    print(f"{'gas (5 proposers, 5 voters)':<{width}}{head}")
    for k in labels:
        cells = ""
        for size in results.values():
            v = size.get(k)
            if isinstance(v, dict):
                cells += f"{v['median']:,} / {v['max']:,}".rjust(22)
            elif v is None:
                cells += f"{'-':>22}"
            else:
                cells += f"{v:>22,}"
        print(f"{k:<{width}}{cells}")
    print("(repeated calls: median / max)")
    print()
    for name, size in report["deployedBytes"].items():
        print(f"{name}: {size:,} bytes deployed (EIP-170 limit 24,576)")
    if "worst" in report:
        w = report["worst"]
        print(
            f"largest round ({w['proposers']} + {w['voters']} seats, {w['participants']} wallets): "
            f"electRoles {w['electRoles']:,}, finalizeRound {w['finalizeRound (all agree)']:,}, "
            f"getRound view {w['getRound (view)']:,}"
        )
    for name, lim in report["limits"].items():
        print(f"limit {name}: {lim['gas']:,} < {lim['limit']:,}: {'ok' if lim['ok'] else 'MISSED'}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--worst", action="store_true", help="also measure 64 + 64 seats, 999 wallets")
    args = ap.parse_args(argv)
    results: dict[str, dict[str, Any]] = {}
    worst: dict[str, int] = {}
    accounts = WORST[2] + 1 if args.worst else max(SIZES) + 1
    with anvil(accounts=accounts) as chain:
        w3 = Web3(Web3.HTTPProvider(chain.rpc_url))
        for n in SIZES:
            snap = w3.provider.make_request("evm_snapshot", [])["result"]  # type: ignore[arg-type]
            results[str(n)] = measure(w3, chain.accounts, n)
            w3.provider.make_request("evm_revert", [snap])  # type: ignore[arg-type]
        if args.worst:
            worst = measure_worst(w3, chain.accounts)
    limits = check_limits(results)
    if worst:
        top = max(worst["electRoles"], worst["finalizeRound (all agree)"])
        limits["worst(tx) < 2^24"] = {
            "gas": top,
            "limit": EIP7825_TX_CAP,
            "ok": top < EIP7825_TX_CAP,
        }
    report: dict[str, Any] = {
        "bench": "gas",
        "proposersPerRound": PROPOSERS,
        "votersPerRound": VOTERS,
        "gas": results,
        "deployedBytes": sizes_from_artifacts(),
        "limits": limits,
    }
    if worst:
        report["worst"] = {
            "proposers": WORST[0],
            "voters": WORST[1],
            "participants": WORST[2],
            **worst,
        }
    if args.json:
        print(json.dumps(report, sort_keys=True))
    else:
        print_table(report)
    return 0 if all(v["ok"] for v in limits.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
