"""The round state machine (PROTOCOL.md "A round"): keeper, proposer and voter paths."""
