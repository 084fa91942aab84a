"""Settings: environment prefix, nested sections, short aliases, the TOML file and clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.settings import CONFIG_FILE_ENV, ENV_PREFIX, Settings, externally_provided, load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX) or name in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL"):
            monkeypatch.delenv(name)


def test_defaults_run_the_local_demo() -> None:
    settings = load_settings()
    assert settings.kafka.bootstrap_servers == "127.0.0.1:19092"
    assert settings.redis.url == "redis://127.0.0.1:16379/0"
    assert settings.api.port == 8000
    assert settings.business.timezone == "UTC"
    assert settings.local.data_dir == Path(".local")
    assert externally_provided() == {"kafka": False, "redis": False, "postgres": False}


def test_prefixed_nested_variables_set_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_PULSE_API__PORT", "9100")
    monkeypatch.setenv("CRM_PULSE_KAFKA__PARTITIONS", "8")
    monkeypatch.setenv("CRM_PULSE_BUSINESS__TIMEZONE", "Europe/Berlin")
    monkeypatch.setenv("CRM_PULSE_LOCAL__DATA_DIR", "/tmp/crm-pulse-data")

    settings = load_settings()

    assert settings.api.port == 9100
    assert settings.kafka.partitions == 8
    assert settings.business.zone.key == "Europe/Berlin"
    assert settings.local.data_dir == Path("/tmp/crm-pulse-data")


def test_unprefixed_section_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API__PORT", "9100")
    assert load_settings().api.port == 8000


def test_short_aliases_point_at_existing_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka-1:9092,kafka-2:9092")
    monkeypatch.setenv("REDIS_URL", "redis://cache:6379/2")

    settings = load_settings()

    assert settings.kafka.bootstrap_servers == "kafka-1:9092,kafka-2:9092"
    assert settings.redis.url == "redis://cache:6379/2"
    assert externally_provided() == {"kafka": True, "redis": True, "postgres": False}


def test_database_url_alias_points_at_an_existing_postgres(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://reports@db:5432/crm")

    assert load_settings().database.url == "postgresql://reports@db:5432/crm"
    assert externally_provided()["postgres"] is True


def test_prefixed_name_wins_over_alias(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "alias:9092")
    monkeypatch.setenv("CRM_PULSE_KAFKA__BOOTSTRAP_SERVERS", "prefixed:9092")
    assert load_settings().kafka.bootstrap_servers == "prefixed:9092"
    assert externally_provided()["kafka"] is True


def test_prefixed_server_names_count_as_external(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_PULSE_REDIS__URL", "redis://cache:6379/0")
    assert externally_provided() == {"kafka": False, "redis": True, "postgres": False}


def test_toml_file_named_by_crm_pulse_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "crm-pulse.toml"
    config.write_text(
        """
[kafka]
partitions = 2
events_topic = "acme.crm.events"

[business]
timezone = "America/New_York"
currency = "EUR"

[[business.funnel]]
name = "lead"
probability = "0.2"

[[business.funnel]]
name = "offer"
probability = "0.6"
"""
    )
    monkeypatch.setenv(CONFIG_FILE_ENV, str(config))
    monkeypatch.setenv("CRM_PULSE_KAFKA__PARTITIONS", "6")  # the environment beats the file

    settings = load_settings()

    assert settings.kafka.partitions == 6
    assert settings.kafka.events_topic == "acme.crm.events"
    assert settings.business.timezone == "America/New_York"
    assert settings.business.currency == "EUR"
    assert settings.business.stage_names == ("lead", "offer")


def test_bad_timezone_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_PULSE_BUSINESS__TIMEZONE", "Mars/Olympus_Mons")

    with pytest.raises(ValidationError) as caught:
        load_settings()

    message = str(caught.value)
    assert "business.timezone" in message
    assert "unknown time zone 'Mars/Olympus_Mons'" in message
    assert "IANA" in message


def test_bad_timezone_in_config_file_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[business]\ntimezone = "Nowhere/Special"\n')
    monkeypatch.setenv(CONFIG_FILE_ENV, str(config))

    with pytest.raises(ValidationError, match="unknown time zone 'Nowhere/Special'"):
        load_settings()


def test_settings_are_frozen_and_overrides_validate_again() -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.api.port = 1  # type: ignore[misc]

    moved = settings.with_overrides(api={"port": 9200})
    assert moved.api.port == 9200
    assert settings.api.port == 8000
    with pytest.raises(ValidationError, match="timezone"):
        settings.with_overrides(business={"timezone": "Not/AZone"})


@pytest.mark.parametrize("instance_id", [None, "crm-pulse-host-3"])
def test_a_child_process_environment_gives_back_the_same_settings(
    monkeypatch: pytest.MonkeyPatch, instance_id: str | None
) -> None:
    # None must stay None: written as "null" it came back as the text "null", so every worker
    # spawned by a test or the supervisor joined with the same static member id and fenced the others.
    settings = Settings().with_overrides(worker={"instance_id": instance_id})
    for name, value in settings.to_environment().items():
        monkeypatch.setenv(name, value)

    assert load_settings() == settings
    assert load_settings().worker.instance_id == instance_id
