"""Typed bindings of FlockTask and FlockToken: a sync core and its trio face.

``TaskClient`` (sync) is what CLI commands use; ``AsyncTaskClient`` runs the
very same methods in a worker thread (``trio.to_thread.run_sync``) for the
node. Views return frozen dataclasses (types.py); transactions return a
:class:`TxResult` with the events they emitted; reverts raise
:class:`~flocknode.chain.errors.ContractRevert` with a sentence.

Views are decoded through the ABI with every ``string`` output read as
``bytes`` (same encoding): a registrant can store any bytes in a ``string``, and
decoding them as UTF-8 would raise on the first invalid byte. The registry
(registry.py) validates them instead.
"""

from __future__ import annotations

import copy
import functools
import hashlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, TypeVar

import trio
from eth_abi import encode as abi_encode
from eth_utils import keccak, to_canonical_address, to_checksum_address
from web3.exceptions import Web3RPCError

from flocknode.chain.contracts import ChainConnection
from flocknode.chain.errors import RpcRejected
from flocknode.chain.events import ChainEvent, EventDecoder, RoundOpened, of_type
from flocknode.chain.fastview import FastViews
from flocknode.chain.registry import Registry, RegistryReader
from flocknode.chain.rpc import is_range_cap
from flocknode.chain.token import TokenClient
from flocknode.chain.types import ParticipantView, Phase, RoundView, TaskParams, from_abi
from flocknode.identity import BoxKey, PeerKey, sign_registration

MAX_LOG_RANGE = 2_000  # blocks per eth_getLogs request (public RPCs cap the range)

# docs/contracts.md "Commitment": the types of abi.encode(chainid, task, round,
# voter, aggregateHash, includedBits, rejectedBits, flagBits, score, salt).
COMMITMENT_TYPES = (
    "uint256",
    "address",
    "uint256",
    "address",
    "bytes32",
    "uint256",
    "uint256",
    "uint256",
    "int64",
    "bytes32",
)


def vote_commitment(
    chain_id: int,
    task: str,
    round: int,
    voter: str,
    aggregate_hash: bytes,
    included_bits: int,
    rejected_bits: int,
    flag_bits: int,
    score: int,
    salt: bytes,
) -> bytes:
    """The commitment ``commitVote`` takes, computed here: the salt never leaves the node."""
    values = (
        chain_id,
        to_canonical_address(task),
        round,
        to_canonical_address(voter),
        bytes(aggregate_hash),
        included_bits,
        rejected_bits,
        flag_bits,
        score,
        bytes(salt),
    )
    return bytes(keccak(abi_encode(list(COMMITMENT_TYPES), list(values))))


def strings_as_bytes(abi: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A copy of ``abi`` whose function outputs decode ``string`` as ``bytes``.

    Inputs are left alone, so selectors and calldata do not change.
    """

    def retype(param: dict[str, Any]) -> None:
        typ = str(param["type"])
        if typ == "string" or typ.startswith("string["):
            param["type"] = "bytes" + typ[len("string") :]
        for comp in param.get("components", ()):
            retype(comp)

    out = copy.deepcopy([dict(e) for e in abi])
    for entry in out:
        if entry.get("type") == "function":
            for param in entry.get("outputs", ()):
                retype(param)
    return out


@dataclass(frozen=True)
class EstimatedOnPending:
    """A contract call whose gas is estimated against the pending block.

    ``electRoles`` is valid from block ``seedBlock + 2`` on, and the keeper
    sends it while the latest block is ``seedBlock + 1``, to be mined in the
    next one. Estimated against "latest" (web3's default) it would revert
    SeedNotReady there, and the election would wait one more block (~1 s a
    round on the local cluster), later than the first possible block.
    An endpoint that refuses "pending" gets the usual estimate.
    """

    fn: Any

    def estimate_gas(self, tx: Mapping[str, Any]) -> int:
        try:
            return int(self.fn.estimate_gas(dict(tx), block_identifier="pending"))
        except Web3RPCError:  # not a revert: the endpoint does not estimate on "pending"
            return int(self.fn.estimate_gas(dict(tx)))

    def build_transaction(self, tx: Mapping[str, Any]) -> dict[str, Any]:
        return dict(self.fn.build_transaction(dict(tx)))


@dataclass(frozen=True)
class TxResult:
    tx_hash: bytes
    block_number: int
    gas_used: int
    events: tuple[ChainEvent, ...]


class TaskClient:
    """FlockTask for one wallet (or read-only without one). Blocking; see AsyncTaskClient."""

    def __init__(self, conn: ChainConnection, address: str) -> None:
        self.conn = conn
        self.address = to_checksum_address(address)
        self._c = conn.contract("FlockTask", self.address)
        view_abi = strings_as_bytes(conn.artifact("FlockTask").abi)
        view_contract = conn.rpc.w3.eth.contract(
            address=self.address, abi=view_abi, decode_tuples=True
        )
        self._views = FastViews(conn, view_contract, view_abi)
        self._registry_reader: RegistryReader | None = None
        self.events_decoder = EventDecoder(
            conn.artifact("FlockTask").abi, self.address, conn.rpc.w3.codec
        )
        self._params: TaskParams | None = None
        self._token: TokenClient | None = None
        self.log_range = MAX_LOG_RANGE  # blocks per eth_getLogs (smaller once refused)

    @property
    def wallet(self) -> str:
        return self.conn.address

    def check(self) -> None:
        """Fail early with a sentence when the address holds no contract on this chain."""
        self.conn.require_code("FlockTask", self.address)

    # -- views ----------------------------------------------------------------

    def _view(
        self,
        name: str,
        args: tuple[Any, ...],
        what: str,
        convert: Callable[[Any], R],
        block: int | None = None,
    ) -> R:
        """A contract view through the cheap path (``conn.view`` semantics, fastview.py),
        as of ``block`` (the latest when None)."""
        return self._views.view(name, args, what, convert, block)

    def params(self) -> TaskParams:
        if self._params is None:  # immutable after deployment
            self._params = self._view("taskParams", (), "taskParams", _task_params)
        return self._params

    def token(self) -> TokenClient:
        if self._token is None:
            self._token = TokenClient(self.conn, self.params().token)
        return self._token

    def current_round(self, block: int | None = None) -> int:
        return self._view("currentRound", (), "currentRound", int, block)

    def published_settings(self) -> bytes | None:
        """The canonical settings JSON published on chain, checked against configHash.

        None when nobody published them. The contract itself refuses bytes whose
        sha256 is not the configHash; the check here guards against a lying RPC.
        """
        block = self._view("settingsBlock", (), "settingsBlock", int)
        if block == 0:
            return None
        logs = self.conn.rpc.request(
            "eth_getLogs(SettingsPublished)",
            lambda: self._c.events.SettingsPublished().get_logs(from_block=block, to_block=block),
        )
        want = self.params().config_hash
        for entry in logs:
            data = bytes(entry["args"]["settings"])
            if hashlib.sha256(data).digest() == want:
                return data
        return None

    def finalized_rounds(self) -> int:
        return self._view("finalizedRounds", (), "finalizedRounds", int)

    def global_model_hash(self, block: int | None = None) -> bytes:
        return self._view("globalModelHash", (), "globalModelHash", bytes, block)

    def global_model_round(self) -> int:
        return self._view("globalModelRound", (), "globalModelRound", int)

    def reward_pool(self) -> int:
        return self._view("rewardPool", (), "rewardPool", int)

    def participant_count(self) -> int:
        return self._view("participantCount", (), "participantCount", int)

    def eligible_count(self) -> int:
        """Wallets whose stake counts as eligible from the next openRound."""
        return self._view("eligibleCount", (), "eligibleCount", int)

    def participants(self, offset: int = 0, limit: int = 100) -> list[ParticipantView]:
        return list(self._view("participants", (offset, limit), "participants", _participants))

    def all_participants(self, page: int = 100) -> list[ParticipantView]:
        total = self.participant_count()
        out: list[ParticipantView] = []
        while len(out) < total:
            batch = self.participants(len(out), page)
            if not batch:
                break
            out.extend(batch)
        return out

    def participant(self, wallet: str | None = None) -> ParticipantView:
        w = to_checksum_address(wallet or self.wallet)
        return self._view("participant", (w,), "participant", _participant)

    def registry_reader(self) -> RegistryReader:
        """The client's reader: it remembers whom it warned about across snapshots."""
        if self._registry_reader is None:
            self._registry_reader = RegistryReader(self.conn.chain_id, self.address)
        return self._registry_reader

    def registry(self, reader: RegistryReader | None = None) -> Registry:
        """Participants with usable registrations (the others dropped and counted).

        Raises only ChainError (the chain could not be read); never for what a
        registrant stored.
        """
        reader = reader or self.registry_reader()
        return reader.build(self.all_participants(), self.params().min_stake)

    def is_eligible(self, wallet: str | None = None) -> bool:
        w = to_checksum_address(wallet or self.wallet)
        return self._view("isEligible", (w,), "isEligible", bool)

    def get_round(self, round: int, block: int | None = None) -> RoundView:
        return self._view("getRound", (round,), f"getRound({round})", _round_view, block)

    def phase(self, round: int) -> Phase:
        return self._view("phase", (round,), f"phase({round})", _phase)

    def vote_commitment(
        self,
        round: int,
        voter: str,
        aggregate_hash: bytes,
        included_bits: int,
        rejected_bits: int,
        flag_bits: int,
        score: int,
        salt: bytes,
    ) -> bytes:
        """The contract's ``voteCommitment``, computed locally (no request is sent)."""
        return vote_commitment(
            self.conn.chain_id,
            self.address,
            round,
            voter,
            aggregate_hash,
            included_bits,
            rejected_bits,
            flag_bits,
            score,
            salt,
        )

    def draw_seats(self, seed: bytes, stakes: Sequence[int], seats: int) -> list[int]:
        fn = self._c.functions.drawSeats(seed, list(stakes), seats)
        return [int(i) for i in self.conn.view(fn, "drawSeats")]

    # -- transactions ---------------------------------------------------------

    def _tx(self, fn: Any, action: str) -> TxResult:
        r = self.conn.transact(fn, action)
        events = tuple(self.events_decoder.decode_all(r.logs))
        return TxResult(r.tx_hash, r.block_number, r.gas_used, events)

    def register(
        self, peer_id: bytes, box_public_key: bytes, multiaddrs: Sequence[str], peer_sig: bytes
    ) -> TxResult:
        fn = self._c.functions.register(peer_id, box_public_key, list(multiaddrs), peer_sig)
        return self._tx(fn, "register")

    def register_node(
        self, peer_key: PeerKey, box_key: BoxKey, multiaddrs: Sequence[str]
    ) -> TxResult:
        """Register this wallet with the node's keys, signing the binding with the peer key."""
        box = box_key.public_bytes
        sig = sign_registration(peer_key, self.conn.chain_id, self.address, self.wallet, box)
        return self.register(peer_key.peer_id.to_bytes(), box, multiaddrs, sig)

    def update_multiaddrs(self, multiaddrs: Sequence[str]) -> TxResult:
        return self._tx(self._c.functions.updateMultiaddrs(list(multiaddrs)), "updateMultiaddrs")

    def _ensure_allowance(self, amount: int) -> None:
        token = self.token()
        if token.allowance(self.wallet, self.address) < amount:
            token.approve(self.address, amount)

    def stake(self, amount: int, *, approve: bool = True) -> TxResult:
        """Stake ``amount`` tokens (approving the task first when the allowance is short)."""
        if approve and amount > 0:
            self._ensure_allowance(amount)
        return self._tx(self._c.functions.stake(amount), "stake")

    def request_unstake(self, amount: int) -> TxResult:
        return self._tx(self._c.functions.requestUnstake(amount), "requestUnstake")

    def withdraw(self) -> TxResult:
        return self._tx(self._c.functions.withdraw(), "withdraw")

    def claim_rewards(self) -> TxResult:
        return self._tx(self._c.functions.claimRewards(), "claimRewards")

    def publish_settings(self, settings: bytes) -> TxResult:
        return self._tx(self._c.functions.publishSettings(settings), "publishSettings")

    def fund_rewards(self, amount: int, *, approve: bool = True) -> TxResult:
        if approve and amount > 0:
            self._ensure_allowance(amount)
        return self._tx(self._c.functions.fundRewards(amount), "fundRewards")

    def open_round(self) -> TxResult:
        """Open the next round (finalizing or voiding the previous one if due)."""
        return self._tx(self._c.functions.openRound(), "openRound")

    def elect_roles(self, round: int) -> TxResult:
        fn = EstimatedOnPending(self._c.functions.electRoles(round))
        return self._tx(fn, f"electRoles({round})")

    def submit_update(self, round: int, update_hash: bytes, blob_id: bytes, size: int) -> TxResult:
        fn = self._c.functions.submitUpdate(round, update_hash, blob_id, size)
        return self._tx(fn, f"submitUpdate({round})")

    def commit_vote(self, round: int, commitment: bytes) -> TxResult:
        return self._tx(self._c.functions.commitVote(round, commitment), f"commitVote({round})")

    def reveal_vote(
        self,
        round: int,
        aggregate_hash: bytes,
        included_bits: int,
        rejected_bits: int,
        flag_bits: int,
        score: int,
        salt: bytes,
    ) -> TxResult:
        fn = self._c.functions.revealVote(
            round, aggregate_hash, included_bits, rejected_bits, flag_bits, score, salt
        )
        return self._tx(fn, f"revealVote({round})")

    def finalize_round(self, round: int) -> TxResult:
        return self._tx(self._c.functions.finalizeRound(round), f"finalizeRound({round})")

    def recheck_sent(self) -> int:
        """Broadcast again the wallet's transactions a reorganisation dropped
        (``Sender.recheck``); 0 without a wallet."""
        sender = self.conn.sender
        return sender.recheck() if sender is not None else 0

    # -- events ---------------------------------------------------------------

    def events(self, from_block: int, to_block: int | None = None) -> list[ChainEvent]:
        """Typed events of this task in [from_block, to_block] (latest when None).

        The range goes in chunks of at most ``MAX_LOG_RANGE`` blocks; an endpoint
        that refuses a chunk as too wide (a provider's range cap) gets half as
        many blocks per query, down to one, and the client keeps the smaller
        chunk for later calls.
        """
        last = self.conn.rpc.block_number() if to_block is None else to_block
        out: list[ChainEvent] = []
        start = max(0, from_block)
        while start <= last:
            end = min(last, start + self.log_range - 1)
            flt = {
                "address": self.address,
                "fromBlock": start,
                "toBlock": end,
                "topics": [["0x" + t.hex() for t in self.events_decoder.topics()]],
            }
            try:
                logs = self.conn.rpc.request(
                    f"eth_getLogs({start}..{end})",
                    lambda flt=flt: self.conn.rpc.w3.eth.get_logs(flt),  # type: ignore[misc]
                )
            except RpcRejected as exc:
                if end == start or not is_range_cap(exc):
                    raise
                self.log_range = max(1, (end - start + 1) // 2)
                continue
            out.extend(self.events_decoder.decode_all(logs))
            start = end + 1
        return out


def _task_params(raw: Any) -> TaskParams:
    return from_abi(TaskParams, raw)


def _participant(raw: Any) -> ParticipantView:
    return from_abi(ParticipantView, raw)


def _participants(raw: Any) -> tuple[ParticipantView, ...]:
    return tuple(from_abi(ParticipantView, p) for p in raw)


def _round_view(raw: Any) -> RoundView:
    return from_abi(RoundView, raw)


def _phase(raw: Any) -> Phase:
    return Phase(int(raw))


def opened_round(result: TxResult) -> int | None:
    """The round an ``open_round`` transaction opened (None if it only closed one)."""
    opened = of_type(result.events, RoundOpened)
    return opened[-1].round if opened else None


# -- the trio face ----------------------------------------------------------------

P = ParamSpec("P")
R = TypeVar("R")

# trio.to_thread.run_sync, untyped here: the stale trio-stubs that trio-typing
# installs do not know trio 0.35's ``abandon_on_cancel``.
_to_thread: Any = trio.to_thread.run_sync


def _off_thread(
    fn: Callable[Concatenate[TaskClient, P], R], *, abandon_on_cancel: bool = False
) -> Callable[Concatenate[AsyncTaskClient, P], Awaitable[R]]:
    """Run a TaskClient method in a worker thread.

    Views may be abandoned on cancellation (nothing depends on their result).
    Transactions are not: a cancelled caller waits until the send finished,
    so the wallet's nonce counter never loses track of a transaction.
    """

    @functools.wraps(fn)
    async def run(self: AsyncTaskClient, *args: P.args, **kwargs: P.kwargs) -> R:
        call = functools.partial(fn, self.sync, *args, **kwargs)
        result: R = await _to_thread(call, abandon_on_cancel=abandon_on_cancel)
        return result

    return run


def _view(
    fn: Callable[Concatenate[TaskClient, P], R],
) -> Callable[Concatenate[AsyncTaskClient, P], Awaitable[R]]:
    return _off_thread(fn, abandon_on_cancel=True)


class AsyncTaskClient:
    """The node's face of a TaskClient: every call runs in a worker thread.

    Calls may run concurrently from many trio tasks; the wallet's nonce lock
    in the shared Sender keeps their transactions in order.
    """

    def __init__(self, sync: TaskClient) -> None:
        self.sync = sync

    @property
    def address(self) -> str:
        return self.sync.address

    @property
    def wallet(self) -> str:
        return self.sync.wallet

    check = _view(TaskClient.check)
    params = _view(TaskClient.params)
    current_round = _view(TaskClient.current_round)
    finalized_rounds = _view(TaskClient.finalized_rounds)
    global_model_hash = _view(TaskClient.global_model_hash)
    global_model_round = _view(TaskClient.global_model_round)
    reward_pool = _view(TaskClient.reward_pool)
    participant_count = _view(TaskClient.participant_count)
    eligible_count = _view(TaskClient.eligible_count)
    participants = _view(TaskClient.participants)
    all_participants = _view(TaskClient.all_participants)
    participant = _view(TaskClient.participant)
    is_eligible = _view(TaskClient.is_eligible)
    registry = _view(TaskClient.registry)
    get_round = _view(TaskClient.get_round)
    phase = _view(TaskClient.phase)
    vote_commitment = _view(TaskClient.vote_commitment)
    draw_seats = _view(TaskClient.draw_seats)
    register = _off_thread(TaskClient.register)
    register_node = _off_thread(TaskClient.register_node)
    update_multiaddrs = _off_thread(TaskClient.update_multiaddrs)
    stake = _off_thread(TaskClient.stake)
    request_unstake = _off_thread(TaskClient.request_unstake)
    withdraw = _off_thread(TaskClient.withdraw)
    claim_rewards = _off_thread(TaskClient.claim_rewards)
    fund_rewards = _off_thread(TaskClient.fund_rewards)
    open_round = _off_thread(TaskClient.open_round)
    elect_roles = _off_thread(TaskClient.elect_roles)
    submit_update = _off_thread(TaskClient.submit_update)
    commit_vote = _off_thread(TaskClient.commit_vote)
    reveal_vote = _off_thread(TaskClient.reveal_vote)
    finalize_round = _off_thread(TaskClient.finalize_round)
    recheck_sent = _off_thread(TaskClient.recheck_sent)
    events = _view(TaskClient.events)

    async def block_number(self) -> int:
        rpc = self.sync.conn.rpc
        return int(await _to_thread(rpc.block_number, abandon_on_cancel=True))

    async def latest_block(self) -> tuple[int, int]:
        """(number, timestamp) of the latest block."""
        rpc = self.sync.conn.rpc
        number, timestamp = await _to_thread(rpc.latest_block_time, abandon_on_cancel=True)
        return int(number), int(timestamp)
