"""Run the stream worker: ``python -m streams.worker`` (or ``crm-pulse worker``)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from faust.worker import Worker

from services.group_leave import leave_quietly
from services.kafka import ensure_product_topics
from services.kafka_logs import quiet_coordinator_start_up
from services.settings import load_settings
from streams.app import create_app


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="crm-pulse worker",
        description="Consume CRM events from Kafka and keep the KPI state in Redis (faust worker).",
    )
    parser.add_argument("--loglevel", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--web-port", type=int, default=None, help="faust web port (default: settings.worker.web_port)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = load_settings()
    if args.web_port is not None:
        settings = settings.with_overrides(worker={"web_port": args.web_port})
    logging.basicConfig(level=args.loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_coordinator_start_up()
    created = asyncio.run(ensure_product_topics(settings))
    if created:
        logging.getLogger(__name__).info("created topics %s", ", ".join(created))
    app = create_app(settings)
    worker = Worker(app, loglevel=args.loglevel, quiet=True, redirect_stdouts=False)
    membership = app.crm_membership  # type: ignore[attr-defined]
    try:
        worker.execute_from_commandline()
    finally:
        # A planned stop (SIGTERM, Ctrl-C): a static member does not leave on its own, so its partitions
        # would wait out the session timeout if no replacement comes; leave now, then free the slot.
        asyncio.run(
            leave_quietly(settings.kafka.bootstrap_servers, settings.kafka.consumer_group, membership.instance_id)
        )
        membership.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
