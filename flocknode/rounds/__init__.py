"""The round state machine (docs/protocol.md, "A round"): keeper, proposer and voter paths."""
