"""``crm-pulse archive [rebuild|migrate]``: the archive sink, its rebuild from Kafka, its migrations (docs/archive.md).

The sink and the rebuild run as ``python -m streams.archive`` (started by module path, like the
worker, so ``services`` imports nothing of ``streams``); ``migrate`` runs here.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from services import localinfra
from services.archive.database import ArchiveError, migrate, shown_url
from services.settings import Settings

ARCHIVE_MODULE = "streams.archive"
PROG = "crm-pulse"


def add_parser(commands: Any) -> None:
    """Add ``archive`` and its actions to the CLI's subcommands."""
    archive = commands.add_parser(
        "archive",
        help="run the archive sink: accepted events, deals and their history into PostgreSQL",
        description="Archive every accepted event of crm.events in PostgreSQL (DATABASE_URL; the local one of "
        "'crm-pulse infra up' by default), with each deal's current state and history, for drill-downs and "
        "reports. Its own consumer group; its offsets are committed with its rows, so a kill never loses or "
        "doubles one. Without an action it runs until Ctrl-C.",
        allow_abbrev=False,
    )
    archive.set_defaults(run=_run_sink)
    actions = archive.add_subparsers(title="actions", dest="archive_action", metavar="ACTION")
    rebuild = actions.add_parser(
        "rebuild",
        help="empty the archive and archive the whole events log again (progress bar), then exit",
        description="Rebuild the archive from Kafka: empty its tables, then archive every record of the events "
        "topic up to its end as of the start. Refused while an archive sink runs.",
        allow_abbrev=False,
    )
    rebuild.add_argument("--force", action="store_true", help="rebuild even if the sink's group still has members")
    rebuild.add_argument("--quiet", action="store_true", help="no progress bar")
    rebuild.set_defaults(run=_rebuild)
    migrate_parser = actions.add_parser(
        "migrate",
        help="bring the archive's schema to the newest migration (the sink does this when it starts)",
        description="Run the archive's alembic migrations up to the newest one.",
        allow_abbrev=False,
    )
    migrate_parser.set_defaults(run=_migrate)


def _exec(settings: Settings, argv: list[str]) -> int:
    env = {**os.environ, **localinfra.client_environment(settings), "PYTHONUNBUFFERED": "1"}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", ARCHIVE_MODULE, *argv], env)


def _run_sink(settings: Settings, args: argparse.Namespace, extras: list[str]) -> int:
    return _exec(settings, ["run"])


def _rebuild(settings: Settings, args: argparse.Namespace, extras: list[str]) -> int:
    return _exec(settings, ["rebuild", *(["--force"] if args.force else []), *(["--quiet"] if args.quiet else [])])


def _migrate(settings: Settings, args: argparse.Namespace, extras: list[str]) -> int:
    url = localinfra.client_settings(settings).database.url
    try:
        migrate(url)
    except ArchiveError as exc:
        print(f"{PROG} archive migrate: error: {exc}", file=sys.stderr)
        return 1
    print(f"archive schema at {shown_url(url)} is up to date")
    return 0
