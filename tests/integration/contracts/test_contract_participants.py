"""FlockTask participants on a real anvil: registration, stake effective next
round, unstake, withdraw locks, rewards pool, views; and the constructor checks."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from web3 import Web3

from tests.fixtures.contracts import (
    DEFAULT_PARAMS,
    ETHER,
    Harness,
    Reverted,
    Vote,
    load_artifact,
    task_params,
)

pytestmark = pytest.mark.integration

STAKE = 200 * ETHER
AGG = b"\xab" * 32


def newcomer(h: Harness, accounts: tuple[str, ...]) -> str:
    return accounts[12]


def test_register_stores_everything_and_emits(h: Harness, accounts: tuple[str, ...]) -> None:
    wallet = newcomer(h, accounts)
    p = h.make_participant(wallet)
    p.multiaddrs = ["/ip4/127.0.0.1/tcp/4101", "/ip4/127.0.0.1/udp/4101/quic-v1"]
    receipt = h.register(p)
    (ev,) = h.events(receipt, "Registered")
    assert (ev.wallet, ev.peerId, ev.boxPublicKey) == (wallet, p.peer_id, p.box_key)
    view = h.task.functions.participant(wallet).call()
    assert view.wallet == wallet
    assert view.peerId == p.peer_id
    assert view.boxPublicKey == p.box_key
    assert view.multiaddrs == p.multiaddrs
    assert view.peerSig == p.peer_sig
    assert (view.stake, view.pendingUnstake, view.rewards, view.slashed) == (0, 0, 0, 0)
    assert view.registeredAt == 8  # the 9th registration
    assert view.lastElectedRound == 0
    assert h.task.functions.participantCount().call() == 9
    assert not h.task.functions.isEligible(wallet).call()
    h.expect_revert(
        h.task.functions.register(p.peer_id, p.box_key, p.multiaddrs, p.peer_sig),
        wallet,
        "AlreadyRegistered",
        wallet,
    )
    receipt = h.send(h.task.functions.updateMultiaddrs(["/ip4/127.0.0.1/tcp/5000"]), wallet)
    assert [e.wallet for e in h.events(receipt, "MultiaddrsUpdated")] == [wallet]
    assert h.task.functions.participant(wallet).call().multiaddrs == ["/ip4/127.0.0.1/tcp/5000"]


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("peer_id", b"", "BadPeerId"),
        ("peer_id", b"\x01" * 129, "BadPeerId"),
        ("box_key", b"\x00" * 32, "BadBoxKey"),
        ("peer_sig", b"\x01" * 63, "BadPeerSig"),
        ("peer_sig", b"\x01" * 65, "BadPeerSig"),
        ("multiaddrs", [], "BadMultiaddrs"),
        ("multiaddrs", ["/ip4/127.0.0.1/tcp/1"] * 9, "BadMultiaddrs"),
        ("multiaddrs", [""], "BadMultiaddrs"),
        ("multiaddrs", ["/" + "x" * 256], "BadMultiaddrs"),
    ],
)
def test_register_rejects_bad_input(
    h: Harness, accounts: tuple[str, ...], field: str, value: object, error: str
) -> None:
    wallet = newcomer(h, accounts)
    p = h.make_participant(wallet)
    setattr(p, field, value)
    h.expect_revert(
        h.task.functions.register(p.peer_id, p.box_key, p.multiaddrs, p.peer_sig), wallet, error
    )


def test_update_multiaddrs_checks(h: Harness, accounts: tuple[str, ...]) -> None:
    h.expect_revert(
        h.task.functions.updateMultiaddrs(["/ip4/1.2.3.4/tcp/1"]), accounts[12], "NotRegistered"
    )
    h.expect_revert(h.task.functions.updateMultiaddrs([]), accounts[1], "BadMultiaddrs")


def test_task_full(deploy: Callable[..., Harness], accounts: tuple[str, ...]) -> None:
    t = deploy(n=6, maxParticipants=6)
    wallet = accounts[12]
    p = t.make_participant(wallet)
    t.expect_revert(
        t.task.functions.register(p.peer_id, p.box_key, p.multiaddrs, p.peer_sig),
        wallet,
        "TaskFull",
    )


def test_participants_pagination(h: Harness, accounts: tuple[str, ...]) -> None:
    everyone = h.task.functions.participants(0, 100).call()
    assert [v.wallet for v in everyone] == list(accounts[1:9])
    assert [v.registeredAt for v in everyone] == list(range(8))
    page = h.task.functions.participants(3, 2).call()
    assert [v.wallet for v in page] == list(accounts[4:6])
    assert h.task.functions.participants(8, 5).call() == []
    assert len(h.task.functions.participants(6, 2**256 - 1).call()) == 2
    h.expect_revert(
        h.task.functions.participant(accounts[12]), h.deployer, "NotRegistered", accounts[12]
    )


def test_stake_and_unstake_checks(h: Harness, accounts: tuple[str, ...]) -> None:
    wallet = accounts[1]
    h.expect_revert(h.task.functions.stake(1), accounts[12], "NotRegistered", accounts[12])
    h.expect_revert(h.task.functions.stake(0), wallet, "ZeroAmount")
    h.expect_revert(h.task.functions.requestUnstake(0), wallet, "ZeroAmount")
    h.expect_revert(
        h.task.functions.requestUnstake(STAKE + 1), wallet, "InsufficientStake", STAKE, STAKE + 1
    )
    h.expect_revert(h.task.functions.withdraw(), wallet, "NothingToWithdraw")
    h.expect_revert(
        h.task.functions.stake(2**112), wallet, "TransferFailed"
    )  # balance too small first
    h.fund(wallet, 2**112)
    h.expect_revert(h.task.functions.stake(2**112), wallet, "AmountTooLarge", STAKE + 2**112)


def test_stake_without_allowance_is_transfer_failed(h: Harness, accounts: tuple[str, ...]) -> None:
    wallet = accounts[1]
    h.send(h.token.functions.approve(h.task.address, 0), wallet)
    h.send(h.token.functions.mint(wallet, ETHER), h.deployer)
    h.expect_revert(h.task.functions.stake(ETHER), wallet, "TransferFailed")


def test_stake_counts_from_the_next_round(h: Harness, accounts: tuple[str, ...]) -> None:
    staker = accounts[1]
    late = accounts[12]
    r, rv = h.open_and_elect()
    assert rv.eligibleStakes[rv.eligible.index(staker)] == STAKE
    # stake added and a registration made while round r is open
    h.fund(staker, 300 * ETHER)
    receipt = h.send(h.task.functions.stake(300 * ETHER), staker)
    assert [(e.wallet, e.amount) for e in h.events(receipt, "Staked")] == [(staker, 300 * ETHER)]
    h.join([late], STAKE)
    assert h.stake_of(staker) == 500 * ETHER  # the active stake the next round counts
    assert h.task.functions.isEligible(late).call()
    now = h.round(r)
    assert now.eligibleStakes[now.eligible.index(staker)] == STAKE  # round r is unchanged
    assert late not in now.eligible
    assert h.task.functions.eligibleCount().call() == 9
    h.play(r, [Vote(AGG, 7)] * 3)
    r2 = h.open_round()
    nxt = h.round(r2)
    assert nxt.eligibleStakes[nxt.eligible.index(staker)] == 500 * ETHER
    assert nxt.eligible[-1] == late and nxt.eligibleStakes[-1] == STAKE


def test_unstake_leaves_from_the_next_round_and_withdraw_waits(h: Harness) -> None:
    r, rv = h.open_and_elect()
    voter = rv.voters[0]
    outsider = next(a for a in rv.eligible if a not in rv.proposers + rv.voters)
    receipt = h.send(h.task.functions.requestUnstake(STAKE), voter)
    assert [(e.wallet, e.amount) for e in h.events(receipt, "UnstakeRequested")] == [(voter, STAKE)]
    view = h.task.functions.participant(voter).call()
    assert (view.stake, view.pendingUnstake) == (0, STAKE)
    assert not h.task.functions.isEligible(voter).call()
    assert voter in h.round(r).eligible  # still counted in round r
    h.expect_revert(h.task.functions.withdraw(), voter, "StillElected", r)
    # a wallet that was not elected can leave at once
    h.send(h.task.functions.requestUnstake(50 * ETHER), outsider)
    before = h.token.functions.balanceOf(outsider).call()
    receipt = h.send(h.task.functions.withdraw(), outsider)
    assert [(e.wallet, e.amount) for e in h.events(receipt, "Withdrawn")] == [
        (outsider, 50 * ETHER)
    ]
    assert h.token.functions.balanceOf(outsider).call() == before + 50 * ETHER
    h.play(r, [Vote(AGG, 7)] * 3)
    # it won the vote that adopted the current model: it waits until the next
    # round's voters had their chance to find that model unservable
    h.expect_revert(h.task.functions.withdraw(), voter, "ModelUnderChallenge", r)
    r2, rv2 = h.open_and_elect()
    assert voter not in rv2.eligible
    h.play(r2, [Vote(AGG, 7, score=-1)] * 3)
    before = h.token.functions.balanceOf(voter).call()
    h.send(h.task.functions.withdraw(), voter)
    assert h.token.functions.balanceOf(voter).call() == before + STAKE
    h.expect_revert(h.task.functions.withdraw(), voter, "NothingToWithdraw")


def test_withdraw_waits_for_the_draw_when_unstaked_during_seeding(h: Harness) -> None:
    r = h.open_round()
    wallets = h.round(r).eligible
    for w in wallets:
        h.send(h.task.functions.requestUnstake(10 * ETHER), w)
    h.expect_revert(h.task.functions.withdraw(), wallets[0], "RoundStillOpen", r)
    h.elect(r)
    rv = h.round(r)
    for w in wallets:
        if w in rv.proposers + rv.voters:
            h.expect_revert(h.task.functions.withdraw(), w, "StillElected", r)
        else:
            h.send(h.task.functions.withdraw(), w)


def test_fund_and_claim_rewards(h: Harness, accounts: tuple[str, ...]) -> None:
    pool = h.task.functions.rewardPool().call()
    assert pool == 100 * ETHER
    h.expect_revert(h.task.functions.fundRewards(0), h.deployer, "ZeroAmount")
    h.fund(accounts[15], 7 * ETHER)
    receipt = h.send(h.task.functions.fundRewards(7 * ETHER), accounts[15])
    assert [(e["from"], e.amount) for e in h.events(receipt, "RewardsFunded")] == [
        (accounts[15], 7 * ETHER)
    ]
    assert h.task.functions.rewardPool().call() == pool + 7 * ETHER
    h.expect_revert(h.task.functions.claimRewards(), accounts[1], "NothingToWithdraw")
    r, rv = h.open_and_elect()
    h.play(r, [Vote(AGG, 7)] * 3)
    voter = rv.voters[0]
    owed = h.task.functions.participant(voter).call().rewards
    assert owed > 0
    before = h.token.functions.balanceOf(voter).call()
    receipt = h.send(h.task.functions.claimRewards(), voter)
    assert [(e.wallet, e.amount) for e in h.events(receipt, "RewardsClaimed")] == [(voter, owed)]
    assert h.token.functions.balanceOf(voter).call() == before + owed
    assert h.task.functions.participant(voter).call().rewards == 0


def test_views_task_params_and_initial_model(h: Harness) -> None:
    p = h.params()
    for name, value in DEFAULT_PARAMS.items():
        assert getattr(p, name) == value, name
    assert p.token == h.token.address
    assert h.task.functions.globalModelHash().call() == DEFAULT_PARAMS["initialModelHash"]
    assert h.task.functions.globalModelRound().call() == 0
    assert h.task.functions.finalizedRounds().call() == 0


@pytest.mark.parametrize(
    ("override", "what"),
    [
        ({"token": "0x0000000000000000000000000000000000000000"}, "token"),
        ({"token": "0x000000000000000000000000000000000000dEaD"}, "token"),
        ({"modelSpecHash": b"\x00" * 32}, "modelSpecHash"),
        ({"configHash": b"\x00" * 32}, "configHash"),
        ({"initialModelHash": b"\x00" * 32}, "initialModelHash"),
        ({"totalRounds": 0}, "totalRounds"),
        ({"proposersPerRound": 0}, "proposersPerRound"),
        ({"proposersPerRound": 65, "maxParticipants": 600}, "proposersPerRound"),
        ({"votersPerRound": 0}, "votersPerRound"),
        ({"votersPerRound": 65, "maxParticipants": 600}, "votersPerRound"),
        ({"maxParticipants": 5}, "maxParticipants"),
        ({"maxParticipants": 1025}, "maxParticipants"),
        ({"minStake": 0}, "minStake"),
        ({"minStake": 2**112}, "minStake"),
        ({"trainSeconds": 0}, "trainSeconds"),
        ({"commitSeconds": 0}, "commitSeconds"),
        ({"revealSeconds": 0}, "revealSeconds"),
        ({"quorumBps": 5000}, "quorumBps"),
        ({"quorumBps": 10001}, "quorumBps"),
        ({"slashBps": 10001}, "slashBps"),
        ({"idleSlashBps": 10001}, "idleSlashBps"),
        ({"proposerShareBps": 10001}, "proposerShareBps"),
        ({"seedDelay": 65}, "seedDelay"),
    ],
)
def test_constructor_rejects_invalid_params(
    h: Harness, w3: Web3, override: dict[str, object], what: str
) -> None:
    art = load_artifact("FlockTask")
    factory = w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
    token = override.pop("token", h.token.address)
    params = task_params(str(token), **override)
    with pytest.raises(Reverted) as info:
        try:
            factory.constructor(params).transact({"from": h.deployer})
        except Exception as exc:  # ContractCustomError from gas estimation
            raise h.decode_revert(exc) from None  # type: ignore[arg-type]
    assert (info.value.name, info.value.args_) == ("InvalidParams", (what,))


def test_constructor_accepts_the_limits(h: Harness, w3: Web3) -> None:
    edge = Harness.deploy(
        w3,
        h.deployer,
        proposersPerRound=64,
        votersPerRound=64,
        maxParticipants=1024,
        minStake=2**112 - 1,
        quorumBps=10_000,
        slashBps=10_000,
        idleSlashBps=10_000,
        proposerShareBps=10_000,
        seedDelay=64,
    )
    p = edge.params()
    assert (p.proposersPerRound, p.votersPerRound, p.maxParticipants, p.seedDelay) == (
        64,
        64,
        1024,
        64,
    )
