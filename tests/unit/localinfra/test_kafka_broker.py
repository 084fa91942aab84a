"""The local broker's configuration, cluster id and jar cache (no JVM started here)."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path
from typing import Any

import pytest

from services.localinfra import kafka_broker
from services.localinfra.errors import FetchError
from services.localinfra.kafka_broker import KafkaBroker, fetch_jars, new_cluster_id
from services.settings import Settings


def properties(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return {key: value for key, value in pairs}


def test_server_properties_for_a_single_combined_node() -> None:
    settings = Settings().with_overrides(
        kafka={"partitions": 6}, local={"kafka_port": 29092, "kafka_controller_port": 29093}
    )
    broker = KafkaBroker.from_settings(settings)

    config = properties(broker.server_properties())

    assert config["process.roles"] == "broker,controller"
    assert config["controller.quorum.voters"] == "1@127.0.0.1:29093"
    assert config["listeners"] == "PLAINTEXT://127.0.0.1:29092,CONTROLLER://127.0.0.1:29093"
    assert config["advertised.listeners"] == "PLAINTEXT://127.0.0.1:29092"
    assert config["log.dirs"] == str(broker.data)
    assert config["num.partitions"] == "6"
    assert config["auto.create.topics.enable"] == "true"
    assert config["group.initial.rebalance.delay.ms"] == "0"
    assert config["offsets.topic.num.partitions"] == "4"
    assert config["offsets.topic.replication.factor"] == "1"
    assert "log.message.timestamp.type" not in config


def test_broker_files_live_under_the_data_dir(tmp_path: Path) -> None:
    broker = KafkaBroker.from_settings(Settings().with_overrides(local={"data_dir": tmp_path, "cache_dir": tmp_path}))
    assert broker.home == tmp_path / "kafka"
    assert broker.pid_file.path == tmp_path / "kafka" / "kafka.pid"
    assert broker.libs == tmp_path / "kafka" / Settings().local.kafka_version / "libs"


def test_cluster_ids_are_16_random_bytes_in_url_safe_base64() -> None:
    ids = {new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    for cluster_id in ids:
        assert len(cluster_id) == 22 and not cluster_id.startswith("-")
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16


def test_fetched_jars_are_not_fetched_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    libs = tmp_path / "4.1.1" / "libs"
    libs.mkdir(parents=True)
    (libs.parent / "fetched").write_text("done\n")

    def no_maven(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("Maven must not run when the jars are there")

    monkeypatch.setattr("services.localinfra.kafka_broker.subprocess.run", no_maven)
    assert fetch_jars(libs, "4.1.1") is False


def test_an_interrupted_fetch_is_redone_and_marked_only_on_success(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    libs = tmp_path / "4.1.1" / "libs"
    libs.mkdir(parents=True)  # jars of an interrupted fetch, but no marker
    pom = tmp_path / "pom.xml"
    pom.write_text("<project/>")
    monkeypatch.setattr(kafka_broker, "require_tool", lambda name, hint: "/usr/bin/mvn")

    def failing_maven(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(command, 1, stdout="", stderr="[ERROR] Could not resolve dependencies")

    monkeypatch.setattr("services.localinfra.kafka_broker.subprocess.run", failing_maven)
    with pytest.raises(FetchError, match="Could not resolve dependencies"):
        fetch_jars(libs, "4.1.1", pom=pom)
    assert not (libs.parent / "fetched").exists()

    def working_maven(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        output = Path(next(arg for arg in command if arg.startswith("-DoutputDirectory=")).split("=", 1)[1])
        output.mkdir(parents=True, exist_ok=True)
        (output / "kafka_2.13-4.1.1.jar").write_bytes(b"jar")
        return subprocess.CompletedProcess(command, 0, stdout="", stderr="")

    monkeypatch.setattr("services.localinfra.kafka_broker.subprocess.run", working_maven)
    assert fetch_jars(libs, "4.1.1", pom=pom) is True
    assert (libs / "kafka_2.13-4.1.1.jar").is_file()
    assert (libs.parent / "fetched").is_file()
