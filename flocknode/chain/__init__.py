"""Chain access: web3 client, contract bindings, the role-draw mirror, events.

Modules (imported directly; this package imports nothing so that the pure
draw does not pull in web3):

- ``draw``       pure mirror of the contract's seed and seat draw
- ``contracts``  ChainConnection (one RPC endpoint + optional wallet), artifacts
- ``client``     TaskClient (sync, for CLI commands) and AsyncTaskClient (trio)
- ``token``      TokenClient (FlockToken)
- ``deploy``     deploy_token / deploy_task
- ``types``      frozen views: TaskParams, ParticipantView, RoundView, Phase
- ``events``     typed events and the log decoder
- ``registry``   participants with verified peer signatures
- ``errors``     ChainError and its subclasses (each message is one sentence)
- ``rpc``, ``txsend``, ``revert``  transport retries, nonces/fees/receipts, revert sentences
"""
