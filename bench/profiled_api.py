"""The API under cProfile, for ``bench.ws_latency --profile-api``: serves like ``uvicorn --factory``
until SIGTERM, then writes the profile.

``python -m bench.profiled_api OUT.prof --host 127.0.0.1 --port 8000``
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import signal

import uvicorn

from dashboard_api.app import create_app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profiled_api", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="where to write the profile (pstats format)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    # uvicorn raises the signal that stopped it again once it has shut down; with this handler in
    # place that second delivery does nothing, so the profile below still gets written.
    signal.signal(signal.SIGTERM, lambda *_: None)
    server = uvicorn.Server(
        uvicorn.Config(create_app, factory=True, host=args.host, port=args.port, log_level="warning", backlog=4096)
    )
    profile = cProfile.Profile()
    profile.enable()
    try:
        asyncio.run(server.serve())
    finally:
        profile.disable()
        profile.dump_stats(args.out)


if __name__ == "__main__":
    main()
