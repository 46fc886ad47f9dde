"""The p2p layer: libp2p host, task gossip, blob and model streams."""
