"""Chain access: web3 client, contract bindings, the role-draw mirror, events."""
