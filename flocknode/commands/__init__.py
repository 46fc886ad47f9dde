"""What each CLI command does; ``flocknode.cli`` only parses arguments and calls these."""

from __future__ import annotations

import argparse


def register_chain_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Subcommands that talk to the chain (task, register, stake, ..., status)."""
    from flocknode.commands import chain_cli

    chain_cli.register(sub)
