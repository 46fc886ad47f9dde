"""The round engine: follows the chain, keeps the task alive, runs this node's roles.

One service with a visible lifecycle (``run`` in a nursery, ``stop``). Every
``poll`` seconds it reads the current round from the chain and then:
- keeps the task moving (open, which finalizes the due round, and elect:
  ``keeper.keeper_call``), one node at a time in an order every node derives
  from the registry (``keeper_turn``);
- starts the proposer or voter path when this node holds a seat, once it holds
  the round's global model, and runs it again while its phase is open if it
  raised (``retry.run_with_retries``; the paths resume from the journal);
- makes sure the node holds the current global model (fetching it from the
  winning voters first, then any node that announced it, by the deadline of
  the phase that needs it) and announces that it does;
- once a round is finished and its global model held, prunes the store and the
  journal to the last ``keep_rounds`` rounds in a worker thread (``_prune``).
All state it needs after a crash is on the chain or in the journal.

No exception from one tick, one gossip message or one spawned task ends the
engine (the node): it is counted (``engine_errors``), logged at most a few
times a minute per kind, and the next tick goes on. Only cancellation stops it.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import random
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import trio

from flocknode.chain.errors import ChainError, ContractRevert
from flocknode.chain.types import Phase, RoundView
from flocknode.logs import PeerLog
from flocknode.p2p.messages import ModelAvailable
from flocknode.rounds.context import RoundContext
from flocknode.rounds.keeper import BENIGN_REVERTS, KeeperCall, keeper_call
from flocknode.rounds.proposer import run_proposer
from flocknode.rounds.retry import RetryPolicy, run_with_retries
from flocknode.rounds.voter import run_voter

log = logging.getLogger(__name__)
limited_log = PeerLog(log)  # lines input from others can cause: a few per minute per kind

REGISTRY_REFRESH_SECONDS = 5.0
_ROUND_MAY_CHANGE = (Phase.FINALIZABLE, Phase.FINALIZED, Phase.VOIDED)
FULL_READ_SECONDS = 3.0
MODEL_ANNOUNCE_SECONDS = 5.0
KEEPER_TURN_SECONDS = 0.5  # from one keeper's turn to the next one's
TICK_ERROR_PAUSE = 2.0  # after a tick that failed
ROLE_RETRY = RetryPolicy()
MIN_MODEL_FETCH_SECONDS = 10.0  # the shortest deadline a global-model fetch gets
MODEL_FETCH_PAUSE = 1.0  # between a failed global-model fetch and the next
_ROLE_PHASES = (Phase.TRAIN, Phase.COMMIT, Phase.REVEAL)


def keeper_turn(call: KeeperCall, wallet: str, members: Iterable[str]) -> int:
    """This wallet's place in the queue of keepers for ``call`` (0 goes first).

    Every node computes the same order from the registry (a hash of the call
    and the wallet, so a different order per round and action): one node
    sends the transaction and the next steps in only when it has not landed a
    turn later. Turns keep it to about one transaction per call: a node whose
    gas estimate ran before the winner's transaction was mined would send its
    own, each revert mines a block, the block count would pass the seed delay
    within a second, and roles would be drawn before the nodes hold the new
    global model (docs/protocol.md, "Behaviour of the node").
    """

    def key(w: str) -> bytes:
        return hashlib.sha256(f"{call.action}:{call.round}:{w}".encode()).digest()

    order = sorted({w.lower() for w in members}, key=key)
    me = wallet.lower()
    return order.index(me) if me in order else len(order)


def model_needed_until(role: str, view: RoundView) -> float:
    """The chain time after which a role of ``view`` can no longer use the global
    model: a proposer trains in the train phase, a voter aggregates until the
    commit deadline."""
    end = view.train_end if role == "proposer" else view.commit_end
    return float(end) if end else math.inf


class RoundEngine:
    def __init__(
        self,
        ctx: RoundContext,
        poll: float = 0.1,
        on_tick: Callable[[RoundEngine], None] | None = None,
    ) -> None:
        self.ctx = ctx
        self.poll = poll
        self.on_tick = on_tick
        self.started = trio.Event()
        self.ready = False  # chain reachable and the global model held
        self.last_error = ""
        self.complete = False
        self._stop = trio.Event()
        self._running: set[tuple[int, str]] = set()
        self._keeper_busy = False
        self._registry_at = -math.inf
        self._slow_read_at = -math.inf
        self._fetching_model = False
        self._model_fetch_at = -math.inf  # chain.clock() the next global-model fetch may start at
        self._announced_at = -math.inf
        self._evaluated: dict[bytes, None] = {}  # models evaluated, the last 16 (insertion order)
        self._pruning = False
        self._pruned_through = 0  # the last finished round the store was pruned for
        self._nursery: trio.Nursery | None = None

    def stop(self) -> None:
        self._stop.set()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._gossip_loop)
            nursery.start_soon(self._chain_loop)
            self.started.set()
            task_status.started()
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    # -- loops -------------------------------------------------------------
    async def _gossip_loop(self) -> None:
        async for received in self.ctx.gossip.messages:
            try:
                self.ctx.inbox.on_message(received)
            except Exception as e:  # one message, not the loop
                self._count_error("gossip", e)

    async def _chain_loop(self) -> None:
        while True:
            try:
                await self._tick()
                self.last_error = ""
            except ChainError as e:
                self.ready = False
                self.last_error = str(e)
                self.ctx.metrics.inc("chain_errors")
                limited_log.warning("chain", "chain unavailable: %s", e)
                await trio.sleep(TICK_ERROR_PAUSE)
            except Exception as e:  # bad data from the chain: this tick only
                self.ready = False
                self.last_error = f"{type(e).__name__}: {e}"
                self._count_error("tick", e)
                await trio.sleep(TICK_ERROR_PAUSE)
            if self.on_tick is not None:
                try:
                    self.on_tick(self)
                except Exception as e:
                    self._count_error("on_tick", e)
            await trio.sleep(self.poll)

    def _count_error(self, where: str, e: Exception) -> None:
        self.ctx.metrics.inc("engine_errors")
        self.ctx.metrics.inc(f"engine_errors_{where}")
        limited_log.warning(where, "engine %s failed, going on: %r", where, e)
        log.debug("engine %s failed", where, exc_info=e)

    async def _tick(self) -> None:
        ctx, chain = self.ctx, self.ctx.chain
        # The chain's state only changes with a new block: a cheap block-number
        # poll decides whether the full read is needed (forced now and then).
        block = await ctx.client.block_number()
        if block == chain.block and chain.clock() - chain.read_at < FULL_READ_SECONDS:
            return
        # Every node polls each block and a local cluster runs many nodes on few
        # cores, so the round number and the global model hash are read only
        # when they can have changed (the round closed, or now and
        # then), not on every block. (A view costs ~0.2 ms of CPU through the
        # client's raw path, ~4 ms through web3.)
        slow = chain.clock() - self._slow_read_at >= FULL_READ_SECONDS
        last = chain.rounds.get(chain.current)
        if slow or last is None or last.phase in _ROUND_MAY_CHANGE:
            current = await ctx.client.current_round()
        else:
            current = chain.current
        view = await ctx.client.get_round(current) if current else None
        moved = current != chain.current
        chain.current = current
        chain.block, chain.block_timestamp = await ctx.client.latest_block()
        chain.read_at = chain.clock()
        if (
            slow
            or moved
            or not chain.global_model_hash
            or (view is not None and view.phase in _ROUND_MAY_CHANGE)
        ):
            chain.global_model_hash = await ctx.client.global_model_hash()
        if slow:
            self._slow_read_at = chain.clock()
        # The client returns the very same RoundView object while the chain's
        # answer is byte-for-byte unchanged (most blocks): the seats stay as they are.
        unchanged = view is not None and chain.rounds.get(current) is view
        if view is not None:
            chain.rounds[current] = view
            for r in [r for r in chain.rounds if r < current - 3]:
                del chain.rounds[r]
        if chain.clock() - self._registry_at > REGISTRY_REFRESH_SECONDS or (
            view is not None and view.round not in ctx.membership._seats
        ):
            ctx.membership.update_registry(await ctx.client.registry())
            self._registry_at = chain.clock()
            unchanged = False  # voters' peer ids come from the registry
        if view is not None and not unchanged:
            ctx.membership.update_round(view)
        chain.publish()

        self._keep_model()
        self._keep_task(current, view, chain.block)
        if view is not None:
            self._take_role(view)
        self.complete = bool(
            view is not None
            and view.phase is Phase.FINALIZED
            and current >= ctx.params.total_rounds
        )
        self.ready = ctx.models.has(chain.global_model_hash)
        if self.ready:
            self._keep_store(current, view)

    # -- keeper ------------------------------------------------------------
    def _keep_task(self, current: int, view: RoundView | None, block: int) -> None:
        call = keeper_call(current, view, self.ctx.params, block)
        if call is None or self._keeper_busy:
            return
        self._keeper_busy = True
        self._spawn(self._keeper, call)

    def _due(self) -> KeeperCall | None:
        chain = self.ctx.chain
        view = chain.rounds.get(chain.current)
        return keeper_call(chain.current, view, self.ctx.params, chain.block)

    async def _my_keeper_turn(self, call: KeeperCall) -> bool:
        """Wait for this node's turn at ``call``; False once another node has done it."""
        members = [m.wallet for m in self.ctx.membership.registry.members if m.eligible]
        turn = keeper_turn(call, self.ctx.wallet, members)
        at = trio.current_time() + turn * KEEPER_TURN_SECONDS + random.uniform(0, 0.05)
        while trio.current_time() < at:
            with trio.move_on_at(at):
                await self.ctx.chain.changed()
            if self._due() != call:
                return False
        return True

    async def _keeper(self, call: KeeperCall) -> None:
        try:
            if not await self._my_keeper_turn(call):
                return
            if call.action == "open":
                await self.ctx.client.open_round()
            else:
                await self.ctx.client.elect_roles(call.round)
            self.ctx.metrics.inc(f"keeper_{call.action}")
            log.info("keeper %s round=%d", call.action, call.round)
        except ContractRevert as e:
            if e.name not in BENIGN_REVERTS:
                log.warning("keeper %s round=%d refused: %s", call.action, call.round, e)
        except ChainError as e:
            log.warning("keeper %s round=%d failed: %s", call.action, call.round, e)
        finally:
            self._keeper_busy = False

    # -- roles -------------------------------------------------------------
    def _take_role(self, view: RoundView) -> None:
        if view.phase not in (Phase.TRAIN, Phase.COMMIT, Phase.REVEAL):
            return
        role = view.role_of(self.ctx.wallet)
        if role is None:
            return
        name, seat = role
        key = (view.round, name)
        if key in self._running:
            return
        self._running = {k for k in self._running if k[0] >= view.round - 3}
        self._running.add(key)
        self.ctx.metrics.role(view.round, name, seat)
        log.info("elected round=%d role=%s seat=%d", view.round, name, seat)
        self._spawn(self._role, name, view, seat)

    def _role_open_until(self, view: RoundView) -> float:
        """The chain time a role of ``view.round`` can still act until (-inf: over)."""
        v = self.ctx.chain.rounds.get(view.round, view)
        if v.phase not in _ROLE_PHASES:
            return -math.inf
        return float(v.reveal_end) if v.reveal_end else math.inf

    async def _role(self, name: str, view: RoundView, seat: int) -> None:
        """Run the role once the base model is held; again while its phase is open if it raised."""
        ctx, r = self.ctx, view.round
        path: Callable[[RoundContext, RoundView, int], Awaitable[None]] = (
            run_proposer if name == "proposer" else run_voter
        )
        if not await self._wait_for_model(name, view):
            ctx.metrics.inc("role_no_model")
            log.warning("round %d: %s without the global model until its phase closed", r, name)
            return

        async def step() -> None:
            await path(ctx, ctx.chain.rounds.get(r, view), seat)

        def failed(e: Exception, failures: int) -> None:
            ctx.metrics.inc("role_errors")
            limited_log.warning(
                "role", "round %d: %s failed (attempt %d), retrying: %r", r, name, failures, e
            )

        done = await run_with_retries(
            step,
            deadline=lambda: self._role_open_until(view),
            now=ctx.chain.now,
            on_error=failed,
            policy=ROLE_RETRY,
        )
        if not done:
            ctx.metrics.inc("role_given_up")
            log.warning("round %d: %s given up: its phase closed or retries ran out", r, name)

    async def _wait_for_model(self, name: str, view: RoundView) -> bool:
        """True once the node holds the global model the role works from (the
        engine fetches it meanwhile), False if the phase that needs it closed
        first. A role whose work is already journaled needs no model. A voter
        starts at once: without the model by its commit cutoff it still votes,
        "base model unavailable" (``unservable.base_model``)."""
        ctx = self.ctx
        if name == "voter":
            return True
        rec = ctx.journal.get(view.round)
        if rec.blob_id:
            return True
        while not ctx.models.has(ctx.chain.global_model_hash):
            v = ctx.chain.rounds.get(view.round, view)
            if v.phase not in _ROLE_PHASES or ctx.chain.now() >= model_needed_until(name, v):
                return False
            await ctx.chain.changed()
        return True

    # -- global model ------------------------------------------------------
    def _keep_model(self) -> None:
        h = self.ctx.chain.global_model_hash
        if not self.ctx.models.has(h):
            if not self._fetching_model and self.ctx.chain.clock() >= self._model_fetch_at:
                self._fetching_model = True
                self._spawn(self._fetch_model, h)
            return
        if h not in self._evaluated:
            self._evaluated[h] = None
            for old in list(self._evaluated)[:-16]:
                del self._evaluated[old]
            self._spawn(self._evaluate_model, h)
        clock = self.ctx.chain.clock
        if clock() - self._announced_at > MODEL_ANNOUNCE_SECONDS:
            self._announced_at = clock()
            self._spawn(self._announce_model, h)

    def _model_needed_by(self) -> float:
        """When this node needs the global model, on trio's clock: the end of the
        phase its role in the current round works in (a proposer trains in the
        train phase, a voter aggregates until the commit deadline), else one train
        phase from now (the next round trains from it). Never less than
        MIN_MODEL_FETCH_SECONDS; a fetch that fails is started again."""
        chain = self.ctx.chain
        view = chain.rounds.get(chain.current)
        need = chain.now() + self.ctx.params.train_seconds
        role = view.role_of(self.ctx.wallet) if view is not None else None
        if view is not None and role is not None and view.phase in (Phase.TRAIN, Phase.COMMIT):
            need = model_needed_until(role[0], view)
        return trio.current_time() + max(need - chain.now(), MIN_MODEL_FETCH_SECONDS)

    async def _fetch_model(self, h: bytes) -> None:
        deadline = self._model_needed_by()
        fetched = False
        try:
            winners = await self._winning_voters(h)
            announced = self.ctx.inbox.model_holders.get(h, ())
            fetched = await self.ctx.models.fetch(h, winners, announced, deadline=deadline)
            if fetched:
                log.info("global model applied model=%s", h.hex()[:12])
                self._announced_at = -math.inf
        except ChainError as e:
            limited_log.warning("chain", "model fetch: chain error %s", e)
        finally:
            self._fetching_model = False
            if not fetched:
                self._model_fetch_at = self.ctx.chain.clock() + MODEL_FETCH_PAUSE

    async def _winning_voters(self, h: bytes) -> list[Any]:
        r = await self.ctx.client.global_model_round()
        if r == 0:
            return []
        view = self.ctx.chain.rounds.get(r) or await self.ctx.client.get_round(r)
        peers = []
        for wallet, vote in zip(view.voters, view.votes, strict=True):
            if vote.revealed and vote.aggregate_hash == h:
                p = self.ctx.membership.peer_of(wallet)
                if p is not None:
                    peers.append(p)
        random.shuffle(peers)
        return peers

    async def _announce_model(self, h: bytes) -> None:
        size = self.ctx.store.size(h)
        if not size:
            return
        rnd = max(self.ctx.chain.current, 1)
        try:
            await self.ctx.gossip.publish(ModelAvailable(rnd, h, size))
        except Exception as e:
            log.debug("model announce failed: %r", e)

    async def _evaluate_model(self, h: bytes) -> None:
        """Test-split accuracy of each global model this node applies (status, plots)."""
        try:
            r = await self.ctx.client.global_model_round()
            state = await self.ctx.models.load_async(h)
            ev = await self.ctx.learner.evaluate_async(state, "test")
            self.ctx.metrics.model_accuracy(r, ev.accuracy)
            log.info("global model round=%d test_accuracy=%.4f", r, ev.accuracy)
        except Exception as e:
            log.warning("evaluating the global model failed: %r", e)

    # -- retention ---------------------------------------------------------
    def _keep_store(self, current: int, view: RoundView | None) -> None:
        """Prune once per finished round, after the node applied (holds) the global model."""
        if self.ctx.pruner is None or self._pruning:
            return
        done = view is not None and view.phase in (Phase.FINALIZED, Phase.VOIDED)
        finished = current if done else current - 1  # openRound closes the round before
        if finished < 1 or finished <= self._pruned_through:
            return
        self._pruning = True
        self._spawn(self._prune, current, finished, self.ctx.chain.global_model_hash)

    async def _prune(self, current: int, finished: int, model: bytes) -> None:
        pruner, metrics = self.ctx.pruner, self.ctx.metrics
        assert pruner is not None
        try:
            await self._journal_applied(model)
            # objects not seen before are dated to this round: if the chain moved on
            # while we waited (slow RPC), date them to where it is now, never older
            current = max(current, self.ctx.chain.current)
            report = await trio.to_thread.run_sync(pruner.prune, current, finished, model)
        except Exception as e:  # housekeeping: retried after the next round, never fatal
            metrics.inc("store_prune_errors")
            log.warning("store prune failed round=%d error=%r", finished, e)
            return
        finally:
            self._pruning = False
            self._pruned_through = max(self._pruned_through, finished)
        self.ctx.models.forget(report.removed)
        metrics.inc("store_pruned_objects", report.objects)
        metrics.inc("store_pruned_bytes", report.bytes_freed)
        metrics.inc("journal_pruned_records", report.records)
        if report.objects or report.records:
            log.info(
                "store pruned round=%d objects=%d bytes_freed=%d journal_records=%d "
                "kept_objects=%d kept_bytes=%d",
                finished,
                report.objects,
                report.bytes_freed,
                report.records,
                report.kept_objects,
                report.kept_bytes,
            )

    async def _journal_applied(self, model: bytes) -> None:
        """Name the held global model in the record of the round that produced it.

        Retention keeps the newest applied models by these records.
        """
        r = await self.ctx.client.global_model_round()
        if r < 1 or await self.ctx.client.global_model_hash() != model:
            return  # the initial model, or a round finalized meanwhile: next time
        if self.ctx.journal.get(r).applied_model != model.hex():
            update = functools.partial(self.ctx.journal.update, r, applied_model=model.hex())
            await trio.to_thread.run_sync(update)

    def _spawn(self, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Start ``fn`` in the engine's nursery; an exception it raises is counted
        and logged, and ends only that task (the node goes on)."""
        assert self._nursery is not None
        self._nursery.start_soon(self._guarded, fn, args, name=getattr(fn, "__name__", None))

    async def _guarded(self, fn: Callable[..., Awaitable[None]], args: tuple[Any, ...]) -> None:
        try:
            await fn(*args)
        except Exception as e:
            self._count_error(getattr(fn, "__name__", "task").lstrip("_"), e)
