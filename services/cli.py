"""The one command line of CRM Pulse: ``crm-pulse`` (also ``python -m services``).

    crm-pulse infra up|down|status|fetch   local Kafka and Redis for development
    crm-pulse worker [ARGS...]             the stream worker    (python -m streams.worker ARGS)
    crm-pulse api [--host H] [--port P]    the dashboard API    (uvicorn dashboard_api.app:create_app --factory)
    crm-pulse simulate [ARGS...]           the event simulator  (python -m services.simulator ARGS)
    crm-pulse replay [ARGS...]             rebuild Redis from Kafka (python -m streams.replay ARGS)
    crm-pulse import FILE [ARGS...]        import a history file (python -m streams.history_import ARGS)
    crm-pulse alerts [ARGS...]             the alerts worker    (python -m alerts.worker ARGS)
    crm-pulse demo [SIMULATOR ARGS...]     infra, worker, alerts, api and simulator together until Ctrl-C
    crm-pulse quotas import FILE.csv       set the quotas of a CSV manager_id,month,amount (all or nothing)
    crm-pulse quotas list [--month M]      the quotas of a month
    crm-pulse tokens create|list|revoke    API tokens and their roles (docs/access.md)
    crm-pulse archive [rebuild|migrate]    the archive sink into PostgreSQL (python -m streams.archive)

Components are started as processes by their module path and never imported here, so
``services`` depends on none of ``streams``, ``alerts`` or ``dashboard_api``. Each child builds
its settings itself from the environment, which this command points at the servers in use.
``quotas`` runs in this process: it calls ``services.quota_store`` (Kafka, then Redis) directly.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from types import FrameType
from typing import NoReturn

from pydantic import ValidationError

from services import archive_command, localinfra, token_command
from services.localinfra import layout
from services.localinfra.errors import START_SERVERS_HINT, LocalInfraError
from services.localinfra.kafka_broker import fetch_jars
from services.localinfra.stack import SERVERS
from services.quotas import (
    CSV_HEADER,
    InvalidQuota,
    Quota,
    QuotaCsvError,
    format_quota_csv,
    parse_month,
    parse_quota_csv,
)
from services.settings import ENV_PREFIX, Settings, externally_provided, load_settings
from services.supervisor import ChildExitedError, Supervisor

WORKER_MODULE = "streams.worker"
REPLAY_MODULE = "streams.replay"
IMPORT_MODULE = "streams.history_import"
ALERTS_MODULE = "alerts.worker"
SIMULATOR_MODULE = "services.simulator"
API_FACTORY = "dashboard_api.app:create_app"

PROG = "crm-pulse"
_Runner = Callable[[Settings, argparse.Namespace, list[str]], int]


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; the exit code."""
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras and not getattr(args, "passthrough", False):
        parser.error(f"unrecognized arguments: {' '.join(extras)}")
    if extras[:1] == ["--"]:
        extras = extras[1:]
    try:
        settings = load_settings()
    except ValidationError as exc:
        where = f"environment, or the file named by {ENV_PREFIX}CONFIG"
        print(f"{PROG}: invalid settings ({where}):\n{exc}", file=sys.stderr)
        return 2
    try:
        code: int = args.run(settings, args, extras)
    except LocalInfraError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    return code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="CRM Pulse: real-time CRM KPIs on Kafka, faust-streaming, Redis and FastAPI.",
        epilog=f"Settings come from {ENV_PREFIX}* environment variables (nested with '__'), KAFKA_BOOTSTRAP_SERVERS, "
        f"REDIS_URL, and the TOML file named by {ENV_PREFIX}CONFIG.",
        allow_abbrev=False,
    )
    commands = parser.add_subparsers(title="commands", dest="command", required=True, metavar="COMMAND")

    infra = commands.add_parser(
        "infra",
        help="start, stop or inspect the local Kafka and Redis",
        description="Local Kafka (KRaft, from Maven Central jars) and Redis (Debian's redis-server) for "
        "development. Servers named by KAFKA_BOOTSTRAP_SERVERS / REDIS_URL are used instead of starting ours.",
        allow_abbrev=False,
    )
    actions = infra.add_subparsers(title="actions", dest="action", required=True, metavar="ACTION")
    for name, help_text, run in (
        ("up", "start the local servers (or reuse running ones) and wait until they answer", _infra_up),
        ("down", "stop the local servers started by 'infra up', by the PIDs in their pid files", _infra_down),
        ("status", "say whether each server answers (exit 3 when one does not)", _infra_status),
        ("fetch", "fetch the Kafka broker's jars from Maven Central (done by 'up' when missing)", _infra_fetch),
    ):
        action = actions.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
        action.set_defaults(run=run)

    worker = commands.add_parser(
        "worker",
        help=f"run the stream worker (python -m {WORKER_MODULE})",
        description=f"Run the stream worker: python -m {WORKER_MODULE} [ARGS...].",
        # --help goes to the module too: it prints the real options.
        add_help=False,
        allow_abbrev=False,
    )
    worker.set_defaults(run=_module_runner(WORKER_MODULE), passthrough=True)

    api = commands.add_parser(
        "api",
        usage="%(prog)s [-h] [--host HOST] [--port PORT] [UVICORN ARGS ...]",
        help="run the dashboard API with uvicorn",
        description=f"Run the dashboard API: python -m uvicorn {API_FACTORY} --factory --host H --port P.",
        epilog="Other arguments go to uvicorn unchanged (for example --reload, or --workers N for N processes on "
        "one port; each reads the change feed and pushes every change to its WebSocket clients).",
        allow_abbrev=False,
    )
    _add_api_address(api)
    api.set_defaults(run=_api, passthrough=True)

    simulate = commands.add_parser(
        "simulate",
        help=f"run the CRM event simulator (python -m {SIMULATOR_MODULE})",
        description=f"Run the CRM event simulator: python -m {SIMULATOR_MODULE} [ARGS...].",
        # --help goes to the module too: it prints the real options.
        add_help=False,
        allow_abbrev=False,
    )
    simulate.set_defaults(run=_module_runner(SIMULATOR_MODULE), passthrough=True)

    replay = commands.add_parser(
        "replay",
        help=f"rebuild the Redis state by replaying Kafka (python -m {REPLAY_MODULE})",
        description=f"Rebuild the Redis state by replaying Kafka: python -m {REPLAY_MODULE} [ARGS...].",
        # --help goes to the module too: it prints the real options.
        add_help=False,
        allow_abbrev=False,
    )
    replay.set_defaults(run=_module_runner(REPLAY_MODULE), passthrough=True)

    history = commands.add_parser(
        "import",
        help=f"import a JSONL history file into Kafka and catch the state up (python -m {IMPORT_MODULE})",
        description=f"Import a JSONL history file: python -m {IMPORT_MODULE} FILE [ARGS...].",
        # --help goes to the module too: it prints the real options.
        add_help=False,
        allow_abbrev=False,
    )
    history.set_defaults(run=_module_runner(IMPORT_MODULE), passthrough=True)

    alerts = commands.add_parser(
        "alerts",
        help=f"run the alerts worker: rules on kpi.updates, notifications (python -m {ALERTS_MODULE})",
        description=f"Run the alerts worker: python -m {ALERTS_MODULE} [ARGS...] (docs/alerts.md).",
        # --help goes to the module too: it prints the real options.
        add_help=False,
        allow_abbrev=False,
    )
    alerts.set_defaults(run=_module_runner(ALERTS_MODULE), passthrough=True)

    demo = commands.add_parser(
        "demo",
        usage="%(prog)s [-h] [--host HOST] [--port PORT] [--no-simulator] [--timeout S] [SIMULATOR ARGS ...]",
        help="run everything locally: infra, worker, alerts, api and simulator, until Ctrl-C",
        description="Start the local Kafka and Redis (unless the environment names servers), then the worker, "
        "the alerts worker, the API and the simulator as child processes with their logs in <data_dir>/logs/. "
        "With the simulator, the month's quotas and a few example alert rules are set when none are. Ctrl-C or "
        "SIGTERM stops the children, then the servers this command started.",
        epilog="Other arguments go to the simulator unchanged.",
        allow_abbrev=False,
    )
    _add_api_address(demo)
    demo.add_argument("--no-simulator", action="store_true", help="do not start the simulator")
    demo.add_argument(
        "--timeout",
        type=float,
        default=180.0,
        metavar="S",
        help="seconds to wait for the API's /healthz (default: %(default)s)",
    )
    demo.set_defaults(run=_demo, passthrough=True)

    quotas = commands.add_parser(
        "quotas",
        help="import or list the managers' monthly quotas",
        description="Quotas per manager per month (for quota and quota_attainment). Changes go to the compacted "
        "Kafka quotas topic and to Redis, like the API's /api/v1/quotas.",
        allow_abbrev=False,
    )
    quota_actions = quotas.add_subparsers(title="actions", dest="action", required=True, metavar="ACTION")
    quota_import = quota_actions.add_parser(
        "import",
        help="set every quota of a CSV file, all or nothing",
        description=f"Set every quota of a CSV file with the header {CSV_HEADER} (columns in any order): amount a "
        "decimal >= 0 with at most 4 decimal places, month YYYY-MM. If any line is bad, every bad line is "
        "reported and nothing is written. Quotas not in the file are left as they are.",
        allow_abbrev=False,
    )
    quota_import.add_argument("file", metavar="FILE.csv", help="the CSV file ('-' reads standard input)")
    quota_import.add_argument(
        "--allow-unknown",
        action="store_true",
        help="accept managers no event was attributed to yet (by default the file is refused: a typo would add "
        "to the team's and company's plan)",
    )
    quota_import.set_defaults(run=_quotas_import)
    quota_list = quota_actions.add_parser(
        "list",
        help="print the quotas of a month",
        description="Print every manager's quota for a month, and the total, from Redis.",
        allow_abbrev=False,
    )
    quota_list.add_argument("--month", help="local month YYYY-MM (default: the current month)")
    quota_list.add_argument("--csv", action="store_true", help=f"print CSV ({CSV_HEADER}) that 'import' reads back")
    quota_list.set_defaults(run=_quotas_list)
    token_command.add_parser(commands)
    archive_command.add_parser(commands)
    return parser


def _add_api_address(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="interface to listen on (default: settings api.host)")
    parser.add_argument("--port", type=int, help="port to listen on (default: settings api.port)")


# -- infra --


def _infra_up(settings: Settings, args: argparse.Namespace, extras: list[str]) -> int:
    localinfra.up(settings, echo=print)
    _print_status(settings)
    print(f"stop them with: {PROG} infra down")
    return 0


def _infra_down(settings: Settings, args: argparse.Namespace, extras: list[str]) -> int:
    if not localinfra.down(settings, echo=print):
        print("no local server was running")
    return 0


def _infra_status(settings: Settings, args: argparse.Namespace, extras: list[str]) -> int:
    return 0 if _print_status(settings) else 3


def _infra_fetch(settings: Settings, args: argparse.Namespace, extras: list[str]) -> int:
    began = time.monotonic()
    libs = layout.kafka_libs(settings)
    fetched = fetch_jars(libs, settings.local.kafka_version)
    how = f"fetched in {time.monotonic() - began:.1f} s" if fetched else "already there"
    print(f"kafka {settings.local.kafka_version} jars: {libs} ({how})")
    return 0


def _print_status(settings: Settings) -> bool:
    statuses = localinfra.status(settings)
    for server in statuses:
        print(server.describe())
    return all(server.running for server in statuses)


# -- components --


def _module_runner(module: str) -> _Runner:
    def run(settings: Settings, args: argparse.Namespace, extras: list[str]) -> int:
        _exec([sys.executable, "-m", module, *extras], _child_env(settings))

    return run


def _api(settings: Settings, args: argparse.Namespace, extras: list[str]) -> int:
    host, port = _api_address(settings, args)
    _exec(_api_argv(settings, host, port, extras), _child_env(settings, host=host, port=port))


def _api_address(settings: Settings, args: argparse.Namespace) -> tuple[str, int]:
    host: str = args.host or settings.api.host
    port: int = args.port if args.port is not None else settings.api.port
    return host, port


def _api_argv(settings: Settings, host: str, port: int, extras: Sequence[str]) -> list[str]:
    argv = [sys.executable, "-m", "uvicorn", API_FACTORY, "--factory", "--host", host, "--port", str(port)]
    if settings.api.workers > 1:
        argv += ["--workers", str(settings.api.workers)]
    return [*argv, *extras]


def _child_env(settings: Settings, *, host: str | None = None, port: int | None = None) -> dict[str, str]:
    """Our environment, pointed at the servers in use, so each child builds the same settings."""
    env = {**os.environ, **localinfra.client_environment(settings), "PYTHONUNBUFFERED": "1"}
    if host is not None:
        env[f"{ENV_PREFIX}API__HOST"] = host
    if port is not None:
        env[f"{ENV_PREFIX}API__PORT"] = str(port)
    return env


def _exec(argv: list[str], env: dict[str, str]) -> NoReturn:
    """Become ``argv``: signals then reach the component itself, and its exit code is ours."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(argv[0], argv, env)


# -- quotas --


def _quotas_import(settings: Settings, args: argparse.Namespace, extras: list[str]) -> int:
    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"{PROG}: cannot read {args.file}: {exc}", file=sys.stderr)
        return 2
    try:
        quotas = parse_quota_csv(text)
    except QuotaCsvError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {args.file}:{problem.line}: {problem.reason}", file=sys.stderr)
        return 1
    in_use = localinfra.client_settings(settings)
    if not args.allow_unknown:
        from redis.exceptions import RedisError

        try:
            unknown = asyncio.run(_unknown_managers(in_use, sorted({quota.manager_id for quota in quotas})))
        except RedisError as exc:
            print(
                f"{PROG}: Redis at {in_use.redis.url} cannot be reached ({exc}); {START_SERVERS_HINT}", file=sys.stderr
            )
            return 1
        if unknown:
            shown = ", ".join(unknown[:10]) + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
            print(
                f"{PROG}: {len(unknown)} manager(s) of {args.file} no event was attributed to: {shown}; nothing was "
                "written. Check the ids (GET /api/v1/managers lists the known ones), or pass --allow-unknown for "
                "managers who have no events yet",
                file=sys.stderr,
            )
            return 2
    return asyncio.run(_write_quotas(in_use, quotas))


async def _unknown_managers(settings: Settings, managers: list[str]) -> list[str]:
    """The managers no event was attributed to (not in the worker's directory)."""
    from services.redis import redis_client
    from services.topics import RedisKeys

    redis = redis_client(settings)
    try:
        known = await redis.smismember(RedisKeys.from_settings(settings).managers, managers) if managers else []
    finally:
        await redis.aclose()
    return [manager for manager, member in zip(managers, known, strict=True) if not member]


DEMO_QUOTA = Decimal("60000")
"""A simulated manager's monthly quota in the demo: about what the simulator sells in a month."""


async def _seed_demo_quotas(settings: Settings) -> int:
    """Give the simulated managers a quota for the current month unless the month has quotas already."""
    from services.kpis.periods import local_date
    from services.quota_store import list_month_quotas
    from services.redis import redis_client
    from services.simulation import SimulationConfig
    from services.topics import RedisKeys

    month = local_date(datetime.now(UTC), settings.business.zone).strftime("%Y-%m")
    redis = redis_client(settings)
    try:
        if await list_month_quotas(redis, RedisKeys.from_settings(settings), month):
            return 0
    finally:
        await redis.aclose()
    managers = SimulationConfig.from_business(settings.business).managers
    width = max(3, len(str(managers)))
    quotas = [
        Quota(manager_id=f"mgr-{index:0{width}d}", month=month, amount=DEMO_QUOTA) for index in range(1, managers + 1)
    ]
    return len(quotas) if await _write_quotas(settings, quotas, quiet=True) == 0 else 0


async def _write_quotas(settings: Settings, quotas: list[Quota], *, quiet: bool = False) -> int:
    # Imported here: only this command needs the Kafka and Redis clients.
    from redis.exceptions import RedisError

    from services.quota_store import QuotaLogUnavailable, QuotaWriter
    from services.quotas import QuotaChange
    from services.redis import redis_client

    redis = redis_client(settings)
    writer = QuotaWriter(settings, redis)
    try:
        await writer.write([QuotaChange.set(quota) for quota in quotas])
    except QuotaLogUnavailable as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except RedisError as exc:
        print(
            f"{PROG}: Redis at {settings.redis.url} cannot be reached ({exc}); {START_SERVERS_HINT}, then import again",
            file=sys.stderr,
        )
        return 1
    finally:
        await writer.close()
        await redis.aclose()
    months = sorted({quota.month for quota in quotas})
    if not quiet:
        print(f"imported {len(quotas)} quota(s) for {', '.join(months)}")
    return 0


def _quotas_list(settings: Settings, args: argparse.Namespace, extras: list[str]) -> int:
    if args.month is None:
        today = datetime.now(UTC).astimezone(settings.business.zone).date()
        month = f"{today.year:04d}-{today.month:02d}"
    else:
        try:
            month = parse_month(args.month)
        except InvalidQuota as exc:
            print(f"{PROG}: {exc}", file=sys.stderr)
            return 2
    return asyncio.run(_print_quotas(localinfra.client_settings(settings), month, as_csv=args.csv))


async def _print_quotas(settings: Settings, month: str, *, as_csv: bool) -> int:
    from redis.exceptions import RedisError

    from services.quota_store import list_month_quotas
    from services.redis import redis_client
    from services.topics import RedisKeys

    redis = redis_client(settings)
    try:
        quotas = await list_month_quotas(redis, RedisKeys.from_settings(settings), month)
    except RedisError as exc:
        print(f"{PROG}: Redis at {settings.redis.url} cannot be reached ({exc}); {START_SERVERS_HINT}", file=sys.stderr)
        return 1
    finally:
        await redis.aclose()
    if as_csv:
        sys.stdout.write(format_quota_csv(quotas))
        return 0
    if not quotas:
        print(f"no quotas for {month}")
        return 0
    width = max(len("manager_id"), *(len(quota.manager_id) for quota in quotas))
    print(f"{'manager_id':<{width}}  amount ({settings.business.currency}), {month}")
    for quota in quotas:
        print(f"{quota.manager_id:<{width}}  {quota.amount:>20,}")
    total = sum(quota.amount for quota in quotas)
    print(f"{'total':<{width}}  {total:>20,}  ({len(quotas)} manager(s))")
    return 0


# -- demo --


class _Stop(Exception):
    """Ctrl-C, SIGTERM or SIGHUP arrived."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


def demo_children(
    settings: Settings, host: str, port: int, *, simulator: bool, extras: Sequence[str] = ()
) -> list[tuple[str, list[str]]]:
    """The demo's child processes in start order (they stop in reverse): name and argv."""
    children = [
        ("worker", [sys.executable, "-m", WORKER_MODULE]),
        ("archive", [sys.executable, "-m", archive_command.ARCHIVE_MODULE]),
        ("alerts", [sys.executable, "-m", ALERTS_MODULE]),
        ("api", _api_argv(settings, host, port, [])),
    ]
    if simulator:
        children.append(("simulator", [sys.executable, "-m", SIMULATOR_MODULE, *extras]))
    return children


def _seed_demo_configuration(settings: Settings) -> None:
    """Quotas and example alert rules for the simulated office, each only when none are set."""
    # Imported here: only the demo needs the Kafka and Redis clients.
    from aiokafka.errors import KafkaError
    from redis.exceptions import RedisError

    from services.alert_config import AlertConfigUnavailable
    from services.demo_alerts import seed_demo_rules
    from services.kafka import TopicCreationError

    seeded = asyncio.run(_seed_demo_quotas(settings))
    if seeded:
        print(f"quotas: set {seeded} demo quotas for this month (none were set)", flush=True)
    try:
        rules = asyncio.run(seed_demo_rules(settings))
    except (AlertConfigUnavailable, KafkaError, TopicCreationError, RedisError, OSError) as exc:
        print(f"{PROG}: the example alert rules were not set ({exc}); the demo runs without them", file=sys.stderr)
        return
    if rules:
        print(f"alerts: set {rules} example alert rules (none were set): GET /api/v1/alerts/rules", flush=True)


def _demo(settings: Settings, args: argparse.Namespace, extras: list[str]) -> int:
    host, port = _api_address(settings, args)
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    base_url = f"http://{shown_host}:{port}"
    logs = layout.logs_dir(settings)
    # What ran before we began is left running at the end; the rest is ours to stop, even half-started.
    ran_before = {server.name for server in localinfra.status(settings) if server.running or server.pid}
    supervisor = Supervisor(logs, _child_env(settings, host=host, port=port))
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_stop)
    code = 0
    try:
        localinfra.up(settings, echo=print)
        for name, argv in demo_children(settings, host, port, simulator=not args.no_simulator, extras=extras):
            child = supervisor.start(name, argv)
            print(f"{name}: started pid {child.pid}, log {child.log_path}", flush=True)
        supervisor.wait_http_ok(f"{base_url}/healthz", timeout=args.timeout)
        tokens = token_command.demo_tokens(settings, layout.data_dir(settings))
        if not args.no_simulator:
            _seed_demo_configuration(localinfra.client_settings(settings))
        print(
            f"\nCRM Pulse demo is running.\n  {'dashboard:':<15}{base_url}/?token={tokens.display}\n"
            f"  {'API docs:':<15}{base_url}/docs (Authorize with the admin token)\n"
            f"  {'admin token:':<15}{tokens.admin}",
            flush=True,
        )
        for child in supervisor.children:
            print(f"  {child.name + ' log:':<15}{child.log_path}")
        for server in localinfra.status(settings):
            if server.home is not None:
                print(f"  {server.name + ' log:':<15}{server.home / (server.name + '.log')}")
        print("Press Ctrl-C to stop.", flush=True)
        while True:
            supervisor.check()
            time.sleep(0.5)
    except _Stop as stop:
        print(f"\n{stop}: stopping", flush=True)
    except (ChildExitedError, TimeoutError, LocalInfraError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr, flush=True)
        code = 1
    finally:
        # A second Ctrl-C must not cut the clean-up short.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        for child in reversed(supervisor.children):
            print(f"{child.name}: stopping pid {child.pid}", flush=True)
        supervisor.stop_all()
        external = externally_provided()
        ours = [name for name in SERVERS if name not in ran_before and not external[name]]
        localinfra.down(settings, only=ours, echo=print)
    return code
