"""What each CLI command does; ``flocknode.cli`` only parses arguments and calls these."""

from __future__ import annotations

from typing import Any


def register_chain_commands(sub: Any) -> None:
    """Subcommands that talk to the chain (task, register, stake, ..., status)."""
    from flocknode.commands import chain_cli

    chain_cli.register(sub)
