"""Which servers the components are pointed at, and where local files go."""

from __future__ import annotations

from pathlib import Path

from services.localinfra import layout, stack
from services.settings import Settings

NOTHING_EXTERNAL = {"kafka": False, "redis": False, "postgres": False}
ALL_EXTERNAL = {"kafka": True, "redis": True, "postgres": True}


def test_components_use_the_local_servers_on_their_configured_ports() -> None:
    settings = Settings().with_overrides(
        local={"kafka_port": 29092, "redis_port": 26379, "postgres_port": 25432},
        redis={"url": "redis://127.0.0.1:16379/5"},
    )
    clients = stack.client_settings(settings, external=NOTHING_EXTERNAL)
    assert clients.kafka.bootstrap_servers == "127.0.0.1:29092"
    assert clients.redis.url == "redis://127.0.0.1:26379/5"
    assert clients.database.url == "postgresql://crm_pulse@127.0.0.1:25432/crm_pulse"


def test_servers_from_the_environment_are_left_as_they_are() -> None:
    settings = Settings().with_overrides(
        kafka={"bootstrap_servers": "kafka:9092"},
        redis={"url": "rediss://:secret@cache:6380/1"},
        database={"url": "postgresql://reports:pw@db:5432/crm"},
    )
    clients = stack.client_settings(settings, external=ALL_EXTERNAL)
    assert clients == settings
    env = stack.client_environment(settings, external=ALL_EXTERNAL)
    assert env == {
        "CRM_PULSE_KAFKA__BOOTSTRAP_SERVERS": "kafka:9092",
        "CRM_PULSE_REDIS__URL": "rediss://:secret@cache:6380/1",
        "CRM_PULSE_DATABASE__URL": "postgresql://reports:pw@db:5432/crm",
    }


def test_status_never_shows_a_redis_password() -> None:
    settings = Settings().with_overrides(redis={"url": "redis://user:secret@127.0.0.1:1/0"})
    statuses = stack.status(settings, external={"kafka": False, "redis": True})
    redis_status = next(server for server in statuses if server.name == "redis")
    assert "secret" not in redis_status.describe()
    assert not redis_status.running


def test_status_never_shows_a_database_password() -> None:
    settings = Settings().with_overrides(database={"url": "postgresql://reports:secret@127.0.0.1:1/crm"})
    statuses = stack.status(settings, external={"postgres": True})
    postgres_status = next(server for server in statuses if server.name == "postgres")
    assert "secret" not in postgres_status.describe()
    assert "127.0.0.1:1/crm" in postgres_status.describe()
    assert not postgres_status.running


def test_relative_paths_are_taken_from_the_project_root(tmp_path: Path) -> None:
    assert layout.resolve(Path(".local")) == layout.project_root() / ".local"
    assert layout.resolve(tmp_path) == tmp_path
    assert (layout.project_root() / "pyproject.toml").is_file()
    assert layout.kafka_pom().is_file()
