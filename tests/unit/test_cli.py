"""The command line: help everywhere, arguments passed through, settings handed to children."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from services import cli
from services.settings import Settings

SUBCOMMANDS = [
    [],
    ["infra"],
    ["infra", "up"],
    ["infra", "down"],
    ["infra", "status"],
    ["infra", "fetch"],
    ["api"],
    ["demo"],
    ["quotas"],
    ["quotas", "import"],
    ["quotas", "list"],
    ["tokens"],
    ["tokens", "create"],
    ["tokens", "list"],
    ["tokens", "revoke"],
    ["archive"],
    ["archive", "rebuild"],
    ["archive", "migrate"],
]


class Execed(Exception):
    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        super().__init__(argv)
        self.argv = argv
        self.env = env


@pytest.fixture
def execed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Replace ``os.execve`` in the CLI: raise what it would have run instead of becoming it."""

    def fake_execve(path: str, argv: list[str], env: dict[str, str]) -> Any:
        raise Execed(argv, env)

    monkeypatch.setattr("services.cli.os.execve", fake_execve)


@pytest.mark.parametrize("command", SUBCOMMANDS, ids=lambda command: " ".join(command) or "crm-pulse")
def test_every_command_has_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main([*command, "--help"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: {' '.join(['crm-pulse', *command])}")


@pytest.mark.parametrize(
    ("command", "option"),
    [
        ("worker", "--web-port"),
        ("simulate", "--rate"),
        ("replay", "--batch-size"),
        ("import", "--no-catch-up"),
        ("alerts", "--config"),
    ],
)
def test_component_help_shows_the_components_own_options(command: str, option: str) -> None:
    # The component's parser answers --help itself (a separate process: the CLI becomes the module).
    shown = subprocess.run(
        [sys.executable, "-m", "services", command, "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(f"usage: crm-pulse {command} ")
    assert option in shown.stdout


@pytest.mark.usefixtures("execed")
def test_component_help_is_passed_to_the_module() -> None:
    with pytest.raises(Execed) as ran:
        cli.main(["replay", "--help"])
    assert ran.value.argv == [sys.executable, "-m", "streams.replay", "--help"]


@pytest.mark.usefixtures("execed")
@pytest.mark.parametrize(
    ("command", "module"),
    [
        ("worker", "streams.worker"),
        ("simulate", "services.simulator"),
        ("replay", "streams.replay"),
        ("alerts", "alerts.worker"),
    ],
)
def test_components_run_by_module_path_with_arguments_passed_through(command: str, module: str) -> None:
    with pytest.raises(Execed) as ran:
        cli.main([command, "--rate", "50", "positional"])
    assert ran.value.argv == [sys.executable, "-m", module, "--rate", "50", "positional"]


@pytest.mark.usefixtures("execed")
def test_double_dash_passes_our_own_options_through() -> None:
    with pytest.raises(Execed) as ran:
        cli.main(["worker", "--", "--help"])
    assert ran.value.argv[-1] == "--help"


@pytest.mark.usefixtures("execed")
def test_children_get_the_servers_in_use_through_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_PULSE_LOCAL__KAFKA_PORT", "19555")
    monkeypatch.setenv("REDIS_URL", "redis://cache.example:6379/3")
    with pytest.raises(Execed) as ran:
        cli.main(["worker"])
    assert ran.value.env["CRM_PULSE_KAFKA__BOOTSTRAP_SERVERS"] == "127.0.0.1:19555"
    assert ran.value.env["CRM_PULSE_REDIS__URL"] == "redis://cache.example:6379/3"


@pytest.mark.usefixtures("execed")
def test_api_runs_the_app_factory_with_uvicorn() -> None:
    with pytest.raises(Execed) as ran:
        cli.main(["api", "--port", "9001", "--reload"])
    argv = ran.value.argv
    assert argv[:5] == [sys.executable, "-m", "uvicorn", "dashboard_api.app:create_app", "--factory"]
    assert argv[5:] == ["--host", "127.0.0.1", "--port", "9001", "--reload"]
    assert ran.value.env["CRM_PULSE_API__PORT"] == "9001"


def test_the_demo_runs_every_component_and_stops_the_simulator_first() -> None:
    settings = Settings()
    children = cli.demo_children(settings, "127.0.0.1", 8000, simulator=True, extras=["--rate", "5"])
    assert [name for name, _ in children] == ["worker", "archive", "alerts", "api", "simulator"]  # stopped in reverse
    argv = dict(children)
    assert argv["archive"] == [sys.executable, "-m", "streams.archive"]
    assert argv["alerts"] == [sys.executable, "-m", "alerts.worker"]
    assert argv["worker"] == [sys.executable, "-m", "streams.worker"]
    assert argv["simulator"] == [sys.executable, "-m", "services.simulator", "--rate", "5"]
    assert argv["api"][5:] == ["--host", "127.0.0.1", "--port", "8000"]
    quiet = cli.demo_children(settings, "127.0.0.1", 8000, simulator=False)
    assert [name for name, _ in quiet] == ["worker", "archive", "alerts", "api"]


def test_archive_runs_the_sink_module_and_rebuild_passes_its_options(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_execve(path: str, argv: list[str], env: dict[str, str]) -> Any:
        raise Execed(argv, env)

    monkeypatch.setattr("services.archive_command.os.execve", fake_execve)
    with pytest.raises(Execed) as ran:
        cli.main(["archive"])
    assert ran.value.argv == [sys.executable, "-m", "streams.archive", "run"]
    assert "CRM_PULSE_DATABASE__URL" in ran.value.env
    with pytest.raises(Execed) as ran:
        cli.main(["archive", "rebuild", "--quiet"])
    assert ran.value.argv == [sys.executable, "-m", "streams.archive", "rebuild", "--quiet"]


def test_unknown_arguments_of_our_own_commands_are_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["infra", "status", "--bogus"])
    assert exited.value.code == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_invalid_settings_are_reported_not_raised(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CRM_PULSE_BUSINESS__TIMEZONE", "Atlantis/Capital")
    assert cli.main(["infra", "status"]) == 2
    assert "unknown time zone 'Atlantis/Capital'" in capsys.readouterr().err


def test_the_cli_imports_no_component_package() -> None:
    code = (
        "import sys, services.cli, services.__main__\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in {'streams', 'alerts', 'dashboard_api'})\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_bad_quota_csv_is_reported_by_line_and_nothing_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv_file = tmp_path / "quotas.csv"
    csv_file.write_text("manager_id,month,amount\nann,2026-11,100\nbob,2026-13,5\ncarl,2026-11,-1\n")
    # The file is refused before any server is contacted (none runs in unit tests).
    assert cli.main(["quotas", "import", str(csv_file)]) == 1
    err = capsys.readouterr().err
    assert "nothing was imported" in err
    assert f"{csv_file}:3: month '2026-13' is not a month" in err
    assert f"{csv_file}:4: amount -1 is negative" in err


def test_quota_import_of_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["quotas", "import", str(tmp_path / "absent.csv")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_quota_list_refuses_a_bad_month(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["quotas", "list", "--month", "2026-11-01"]) == 2
    assert "YYYY-MM" in capsys.readouterr().err


def test_tokens_create_needs_a_role_and_a_name(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["tokens", "create", "--role", "boss", "--name", "x"])
    assert exited.value.code == 2
    assert "invalid choice: 'boss'" in capsys.readouterr().err


@pytest.mark.parametrize("module", ["streams.replay", "streams.history_import"])
def test_a_batch_size_below_one_is_refused(module: str, tmp_path: Path) -> None:
    """A batch of no records would never end the replay: refused before anything starts."""
    history = tmp_path / "history.jsonl"
    history.write_text("")
    args = ["--batch-size", "0", *([str(history)] if module == "streams.history_import" else [])]
    done = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--batch-size must be at least 1" in done.stderr


UNREACHABLE = {
    "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
    "CRM_PULSE_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1",
    "REDIS_URL": "redis://127.0.0.1:1",
    "CRM_PULSE_REDIS__URL": "redis://127.0.0.1:1",
}
"""Settings naming servers that refuse every connection (nothing listens on port 1)."""


@pytest.mark.parametrize(
    ("args", "failed", "said"),
    [
        (["streams.replay", "--quiet"], "Kafka at 127.0.0.1:1", "run `crm-pulse replay` again once it is back"),
        (
            ["streams.replay", "--keep", "--quiet"],
            "Kafka at 127.0.0.1:1",
            "run `crm-pulse replay --keep` again once it is back",
        ),
        # (--force: no question to Kafka about running workers first; --keep asks Redis whether the
        # state holds events)
        (
            ["streams.replay", "--keep", "--force", "--quiet"],
            "Redis at redis://127.0.0.1:1",
            "run `crm-pulse replay --keep` again once it is back",
        ),
        (
            ["streams.history_import", "HISTORY", "--quiet"],
            "Kafka at 127.0.0.1:1",
            "while producing the file: import it again",
        ),
    ],
)
def test_bulk_commands_say_which_server_failed_and_what_to_do(
    args: list[str], failed: str, said: str, tmp_path: Path
) -> None:
    history = tmp_path / "history.jsonl"
    history.write_text('{"event_id": "e1"}\n')
    argv = [str(history) if arg == "HISTORY" else arg for arg in args]
    done = subprocess.run(
        [sys.executable, "-m", *argv], capture_output=True, text=True, timeout=60, env={**os.environ, **UNREACHABLE}
    )
    assert done.returncode == 1, done.stderr
    assert f"{failed} failed or cannot be reached" in done.stderr
    assert said in done.stderr
    assert "crm-pulse infra up" in done.stderr  # how to start the local servers
    assert "Traceback" not in done.stderr
