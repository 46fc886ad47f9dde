"""The node's HTTP endpoint for operators (loopback by default, ``[http]`` in node.toml).

Served by hypercorn's trio worker with a starlette app; every route reads one
``FlockNode.status()`` snapshot, the node's single source of truth:

    /             status page for a person (server-rendered HTML + inline SVG)
    /status.json  the snapshot itself
    /metrics      Prometheus text format (a custom collector over the snapshot)
    /healthz      alive (200 while the process serves requests)
    /readyz       ready: chain reachable, a peer connected, global model held (else 503)

Modules: ``server`` (the service), ``app`` (routes), ``collector`` (/metrics),
``readiness`` (pure), ``page`` and ``svg`` (pure rendering), ``history`` (the
stake/rewards sampler the node runs).
"""
