"""Where the local infrastructure keeps its files.

Relative paths in the settings are taken from the project root (the folder holding
``pyproject.toml``), so ``crm-pulse infra down`` finds the servers that ``infra up`` started
whatever the working directory.

    <data_dir>/kafka/       server.properties, log4j2.properties, kafka.log, kafka.pid, cluster.id, data/
    <data_dir>/redis/       redis.log, redis.pid, appendonly files
    <data_dir>/logs/        logs of the processes started by ``crm-pulse demo``
    <cache_dir>/kafka/<version>/libs/   the broker's jars, fetched from Maven Central
"""

from __future__ import annotations

from pathlib import Path

from services.settings import Settings

_PACKAGE_PARENT = Path(__file__).resolve().parents[2]


def project_root() -> Path:
    """The source checkout (where ``pyproject.toml`` is), or the working directory when installed."""
    if (_PACKAGE_PARENT / "pyproject.toml").is_file():
        return _PACKAGE_PARENT
    return Path.cwd()


def resolve(path: Path) -> Path:
    """An absolute path; relative ones are taken from the project root."""
    return path if path.is_absolute() else project_root() / path


def data_dir(settings: Settings) -> Path:
    return resolve(settings.local.data_dir)


def logs_dir(settings: Settings) -> Path:
    """Where ``crm-pulse demo`` writes the logs of the components it starts."""
    return data_dir(settings) / "logs"


def kafka_home(settings: Settings) -> Path:
    return data_dir(settings) / "kafka"


def redis_home(settings: Settings) -> Path:
    return data_dir(settings) / "redis"


def kafka_libs(settings: Settings) -> Path:
    return resolve(settings.local.cache_dir) / "kafka" / settings.local.kafka_version / "libs"


def kafka_pom() -> Path:
    return project_root() / "infra" / "kafka" / "pom.xml"
