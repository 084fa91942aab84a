"""One process of WebSocket clients for bench.ws_latency: connects, subscribes like a wall display,
notes when each event's effect arrives, and reports back. Run by bench.ws_latency, not by hand.

``python -m bench.ws_clients --url ws://... --first 0 --count 500 --events 4000 --out FILE``

Each client subscribes to the company and one team (``t:team-<k % teams>``) with a KPI filter.
The bench's events are calls, processed in order (one partition), so the company's calls of the
day count them: event ``i`` has arrived once a ``change`` of ``c``/``day`` shows at least
``baseline + i + 1`` calls (coalescing may skip intermediate values; values are absolute).
Protocol with the parent on stdout, one JSON object a line: ``{"ready": n}`` once subscribed,
``{"complete": true}`` when every client has every event; on ``stop`` (stdin) it writes the arrival
times (wall clock, seconds; NaN = never) as doubles, client after client, to ``--out`` and prints
``{"done": ..., "received": [...], "closed": [...]}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import sys
import time
from array import array
from typing import Any

import websockets
from websockets.exceptions import ConnectionClosed

COMPANY_DAY_CALLS = re.compile(r'"scope":"c","g":"day","b":"[^"]*","kpis":\{"calls":(\d+)')
KPIS = ["calls", "meetings", "deals_won", "revenue", "win_rate", "pipeline"]
"""What a wall display shows (the filter of every bench client)."""


def team_of(index: int, teams: int) -> str:
    return f"team-{index % teams:02d}"


class Clients:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.events = args.events
        self.arrivals = [array("d", [math.nan]) * args.events for _ in range(args.count)]
        self.seen = [0] * args.count  # events arrived so far, per client
        self.received = [0] * args.count
        self.closed: list[str | None] = [None] * args.count
        self.complete = 0
        self.sockets: list[Any] = []
        self.readers: list[asyncio.Task[None]] = []

    async def connect(self, slot: int) -> None:
        ws = await websockets.connect(
            self.args.url,
            compression="deflate" if self.args.deflate else None,
            ping_interval=None,  # the server sends its own heartbeat; client pings would only add load
            max_size=None,
            open_timeout=120,
            close_timeout=5,
        )
        team = team_of(self.args.first + slot, self.args.teams)
        await ws.send(json.dumps({"type": "subscribe", "scopes": ["c", f"t:{team}"], "kpis": KPIS}))
        snapshot = json.loads(await asyncio.wait_for(ws.recv(), 60))
        if snapshot.get("type") != "snapshot":
            raise RuntimeError(f"expected a snapshot after subscribing, got {str(snapshot)[:200]}")
        baseline = int(snapshot["scopes"]["c"]["day"]["kpis"]["calls"])
        self.sockets.append(ws)
        self.readers.append(asyncio.create_task(self.read(slot, ws, baseline)))

    async def read(self, slot: int, ws: Any, baseline: int) -> None:
        arrivals = self.arrivals[slot]
        clock = time.time
        events = self.events
        try:
            async for raw in ws:
                now = clock()
                self.received[slot] += 1
                found = COMPANY_DAY_CALLS.search(raw, 0, 300)
                if found is None:
                    continue
                upto = min(int(found.group(1)) - baseline, events)
                first = self.seen[slot]
                if upto > first:
                    for event in range(first, upto):
                        arrivals[event] = now
                    self.seen[slot] = upto
                    if upto == events:
                        self.complete += 1
                        if self.complete == len(self.arrivals):
                            emit({"complete": True})
        except ConnectionClosed as closed:
            frame = closed.rcvd
            self.closed[slot] = f"{frame.code} {frame.reason}" if frame is not None else "no close frame"
        else:
            self.closed[slot] = "closed by the server"


def write_arrivals(path: str, arrivals: list[array[float]]) -> None:
    with open(path, "wb") as out:
        for mine in arrivals:
            mine.tofile(out)


def emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def run(args: argparse.Namespace) -> None:
    clients = Clients(args)
    gate = asyncio.Semaphore(args.connect_concurrency)

    async def connect(slot: int) -> None:
        async with gate:
            await clients.connect(slot)

    results = await asyncio.gather(*(connect(slot) for slot in range(args.count)), return_exceptions=True)
    failures = [repr(r) for r in results if isinstance(r, BaseException)]
    emit({"ready": args.count - len(failures), "failures": failures[:3]})
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)  # "stop"
    await asyncio.to_thread(write_arrivals, args.out, clients.arrivals)
    emit({"done": True, "received": clients.received, "closed": clients.closed})
    for ws in clients.sockets:
        ws.transport.abort()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ws_clients", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--first", type=int, required=True, help="index of this process's first client")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--teams", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--connect-concurrency", type=int, default=50)
    parser.add_argument("--deflate", action="store_true")
    parser.add_argument("--no-uvloop", dest="uvloop", action="store_false")
    args = parser.parse_args()
    if args.uvloop:
        try:
            import uvloop

            uvloop.run(run(args))
            return
        except ImportError:
            pass
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
