"""A p2p node in its own process (for the SIGKILL test): serves blobs until killed.

argv[1]: JSON {"seed", "members": {peer id: [addrs]}, "voters": [peer ids], "blob_dir"},
and optionally "listen" (a multiaddr; loopback by default).
Prints one JSON line {"addrs": [...]} once listening.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import trio
from libp2p.peer.id import ID

from flocknode.identity.keys import PeerKey
from flocknode.p2p.content import DirectoryBlobSource
from flocknode.p2p.host import HostConfig, P2PHost
from flocknode.p2p.membership import StaticMembership
from flocknode.p2p.serve import ContentServer


async def main(args: dict[str, Any]) -> None:
    membership = StaticMembership(round_number=1)
    for pid, addrs in args["members"].items():
        membership.add(ID.from_base58(pid), addrs)
    membership.set_voters(1, [ID.from_base58(v) for v in args["voters"]])
    listen = args.get("listen", "/ip4/127.0.0.1/tcp/0")
    config = HostConfig(listen_addrs=(listen,), discovery_interval=0.5, redial_cap=2.0)
    p2p = P2PHost(PeerKey.from_seed(bytes.fromhex(args["seed"])), membership, config)
    source = DirectoryBlobSource(Path(args["blob_dir"]))
    async with trio.open_nursery() as nursery:
        addrs = await nursery.start(p2p.run)
        ContentServer(p2p, source, source).install()
        print(json.dumps({"addrs": [str(a).split("/p2p/")[0] for a in addrs]}), flush=True)
        await trio.sleep_forever()


if __name__ == "__main__":
    trio.run(main, json.loads(sys.argv[1]))
