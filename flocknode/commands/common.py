"""Shared pieces of the chain commands: amounts and progress lines.

Connecting from a config is ``flocknode.connect.connect``."""

from __future__ import annotations

import sys
from decimal import Decimal, InvalidOperation

from flocknode.chain.client import TxResult
from flocknode.errors import ConfigError

DECIMALS = 18


def parse_amount(text: str, flag: str) -> int:
    """``"12.5"`` tokens -> base units (18 decimals). Errors name the flag."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ConfigError(flag, "", f"not a token amount: {text!r}") from None
    units = value * (10**DECIMALS)
    if value < 0 or units != units.to_integral_value():
        msg = f"not a token amount with at most {DECIMALS} decimals: {text!r}"
        raise ConfigError(flag, "", msg)
    return int(units)


def format_amount(units: int) -> str:
    whole, frac = divmod(units, 10**DECIMALS)
    if not frac:
        return str(whole)
    return f"{whole}.{str(frac).rjust(DECIMALS, '0').rstrip('0')}"


def progress(line: str) -> None:
    """A progress line on stderr (stdout stays clean for --json)."""
    print(line, file=sys.stderr, flush=True)


def report_tx(what: str, result: TxResult) -> None:
    progress(f"  {what}: mined in block {result.block_number} (gas {result.gas_used:,})")
