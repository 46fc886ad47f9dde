"""Turn revert data into a :class:`ContractRevert` with a sentence.

Custom errors are looked up by selector in the ABIs of the contracts the
client talks to (FlockTask and FlockToken, so a token error that bubbles up
through ``stake`` is decoded too); the arguments are decoded with eth_abi and
put into a sentence. ``Error(string)`` and ``Panic(uint256)`` are handled as
Solidity defines them. Anything else still gives a sentence, never a crash.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi import decode
from eth_utils import function_signature_to_4byte_selector, to_checksum_address

from flocknode.chain.errors import ContractRevert
from flocknode.chain.types import Phase

ERROR_STRING_SELECTOR = bytes.fromhex("08c379a0")
PANIC_SELECTOR = bytes.fromhex("4e487b71")

PANIC_REASONS = {
    0x01: "an assertion failed",
    0x11: "an arithmetic overflow or underflow",
    0x12: "a division by zero",
    0x21: "an invalid enum value",
    0x22: "a corrupt storage byte array",
    0x31: "a pop from an empty array",
    0x32: "an array index out of bounds",
    0x41: "an allocation that is too large",
    0x51: "a call to an uninitialized function",
}


def _w(a: Any) -> str:
    return to_checksum_address(a)


def _phase(v: int) -> str:
    try:
        return f"the {Phase(v).label} phase"
    except ValueError:
        return f"phase {v}"


# One sentence per custom error of docs/contracts.md and FlockToken.sol, built
# from the positional arguments.
SENTENCES: dict[str, Callable[..., str]] = {
    "NotRegistered": lambda w: f"wallet {_w(w)} is not registered in this task",
    "AlreadyRegistered": lambda w: f"wallet {_w(w)} is already registered in this task",
    "TaskFull": lambda: (
        "the task is full: it has its maximum number of participants, and none can be evicted "
        "(each holds a stake, is in a round, or registered under 10 minutes ago)"
    ),
    "BadPeerId": lambda: "the peer id is malformed",
    "BadBoxKey": lambda: (
        "the box public key is a low-order X25519 point (all zero is one): nobody can seal to it"
    ),
    "BadPeerSig": lambda: "the peer signature is malformed (it must be 64 bytes)",
    "BadMultiaddrs": lambda: "the multiaddrs are missing, too many or too long",
    "AmountTooLarge": lambda amount: f"the amount {amount} is too large for a stake",
    "ZeroAmount": lambda: "the amount must be greater than zero",
    "InsufficientStake": lambda have, want: f"not enough stake: have {have}, need {want}",
    "ModelUnderChallenge": lambda r: (
        f"cannot withdraw yet: this wallet voted for the model adopted in round {r}, which the "
        "next round's voters can still find unservable; wait until a later round is finalized"
    ),
    "StillElected": lambda r: (
        f"cannot withdraw while elected in round {r}, which is not finalized yet"
    ),
    "NothingToWithdraw": lambda: "nothing to withdraw: no unstaked tokens are due",
    "NotEnoughEligible": lambda have, want: (
        f"not enough eligible participants to open a round: {have}, need {want}"
    ),
    "RoundStillOpen": lambda r: f"round {r} is still open",
    "NoSuchRound": lambda r: f"round {r} does not exist",
    "WrongPhase": lambda r, have, want: f"round {r} is in {_phase(have)}, not {_phase(want)}",
    "SeedNotReady": lambda r, block: f"the seed for round {r} is not ready until block {block}",
    "NotElectedProposer": lambda r, w: f"wallet {_w(w)} is not an elected proposer in round {r}",
    "NotElectedVoter": lambda r, w: f"wallet {_w(w)} is not an elected voter in round {r}",
    "AlreadySubmitted": lambda r, w: f"wallet {_w(w)} already submitted an update in round {r}",
    "AlreadyCommitted": lambda r, w: f"wallet {_w(w)} already committed a vote in round {r}",
    "AlreadyRevealed": lambda r, w: f"wallet {_w(w)} already revealed its vote in round {r}",
    "NotCommitted": lambda r, w: f"wallet {_w(w)} committed no vote in round {r}",
    "CommitmentMismatch": lambda r, w: (
        f"the vote revealed by wallet {_w(w)} in round {r} does not match its commitment"
    ),
    "AlreadyElected": lambda r: f"the roles of round {r} are already elected",
    "AlreadyFinalized": lambda r: f"round {r} is already finalized",
    "TaskComplete": lambda: "the task is complete: every round has run",
    "InvalidParams": lambda what: f"invalid task parameters: {what}",
    "SettingsMismatch": lambda: (
        "these settings do not hash to the task's configHash (sha256 of the canonical JSON)"
    ),
    "SettingsAlreadyPublished": lambda: "the task's settings are already published",
    "TransferFailed": lambda: (
        "the token transfer failed: check the wallet's token balance and its allowance for the task"
    ),
    # FlockToken
    "NotMinter": lambda w: f"wallet {_w(w)} may not mint: only the token's deployer can",
    "ZeroAddress": lambda: "the zero address is not allowed here",
    "InsufficientBalance": lambda w, have, want: (
        f"wallet {_w(w)} holds {have} tokens, needs {want}"
    ),
    "InsufficientAllowance": lambda spender, have, want: (
        f"the token allowance of {_w(spender)} is {have}, needs {want} (approve first)"
    ),
}


@dataclass(frozen=True)
class _ErrorAbi:
    name: str
    arg_names: tuple[str, ...]
    arg_types: tuple[str, ...]


def _abi_type(entry: Mapping[str, Any]) -> str:
    t = str(entry["type"])
    if t.startswith("tuple"):
        inner = ",".join(_abi_type(c) for c in entry.get("components", []))
        return f"({inner}){t[len('tuple') :]}"
    return t


class RevertDecoder:
    """Maps revert data to sentences using the ``error`` entries of some ABIs."""

    def __init__(self, abis: Iterable[Sequence[Mapping[str, Any]]]) -> None:
        self._errors: dict[bytes, _ErrorAbi] = {}
        for abi in abis:
            for entry in abi:
                if entry.get("type") != "error":
                    continue
                types = tuple(_abi_type(i) for i in entry.get("inputs", []))
                names = tuple(
                    str(i.get("name") or f"arg{n}") for n, i in enumerate(entry.get("inputs", []))
                )
                selector = function_signature_to_4byte_selector(
                    f"{entry['name']}({','.join(types)})"
                )
                self._errors[selector] = _ErrorAbi(str(entry["name"]), names, types)

    def error_names(self) -> set[str]:
        return {e.name for e in self._errors.values()}

    def decode(self, data: bytes, action: str = "") -> ContractRevert:
        """A ContractRevert for raw revert data (selector + ABI-encoded args)."""
        data = bytes(data)
        if not data:
            return ContractRevert(
                f"the contract refused{_for(action)} without giving a reason",
                name="",
                action=action,
                data=data,
            )
        selector, body = data[:4], data[4:]
        try:
            if selector == ERROR_STRING_SELECTOR:
                (reason,) = decode(["string"], body)
                return ContractRevert(
                    f"the contract refused{_for(action)}: {reason}",
                    name="Error",
                    args={"reason": reason},
                    action=action,
                    data=data,
                )
            if selector == PANIC_SELECTOR:
                (code,) = decode(["uint256"], body)
                what = PANIC_REASONS.get(code, f"panic code {code:#x}")
                return ContractRevert(
                    f"the contract failed{_for(action)} with {what} (a contract bug)",
                    name="Panic",
                    args={"code": code},
                    action=action,
                    data=data,
                )
            err = self._errors.get(selector)
            if err is None:
                return ContractRevert(
                    f"the contract refused{_for(action)} with an unknown error 0x{data.hex()}",
                    name="",
                    action=action,
                    data=data,
                )
            values = tuple(
                to_checksum_address(v) if t == "address" else v
                for t, v in zip(err.arg_types, decode(list(err.arg_types), body), strict=True)
            )
        except Exception:  # malformed revert data from the node: still one sentence
            return ContractRevert(
                f"the contract refused{_for(action)} with malformed error data 0x{data[:68].hex()}",
                name="",
                action=action,
                data=data,
            )
        args = dict(zip(err.arg_names, values, strict=True))
        return ContractRevert(
            _sentence(err.name, values), name=err.name, args=args, action=action, data=data
        )


def _for(action: str) -> str:
    return f" {action}" if action else ""


def _sentence(name: str, values: Sequence[Any]) -> str:
    make = SENTENCES.get(name)
    if make is not None:
        try:
            return make(*values)
        except Exception:  # the contract's arguments differ from the documented ones
            pass
    shown = ", ".join(v.hex() if isinstance(v, bytes) else str(v) for v in values)
    return f"the contract refused: {name}({shown})"


def revert_data_from(value: object) -> bytes | None:
    """The raw revert bytes carried by a web3 ContractLogicError's ``data``, if any."""
    if isinstance(value, Mapping):
        value = value.get("data")
    if isinstance(value, bytes):
        return value
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text.startswith("Reverted "):
        text = text[len("Reverted ") :]
    if text.startswith("0x"):
        try:
            return bytes.fromhex(text[2:])
        except ValueError:
            return None
    return None
