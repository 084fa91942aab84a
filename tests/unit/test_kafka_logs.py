"""aiokafka's coordinator retries while the broker starts are INFO; other coordinator failures stay ERROR."""

from __future__ import annotations

import logging

import pytest
from aiokafka.errors import GroupAuthorizationFailedError, GroupCoordinatorNotAvailableError

from services.kafka_logs import COORDINATOR_LOGGER, quiet_coordinator_start_up


def test_coordinator_not_available_while_starting_is_info(caplog: pytest.LogCaptureFixture) -> None:
    quiet_coordinator_start_up()
    quiet_coordinator_start_up()  # once is enough, twice is harmless
    logger = logging.getLogger(COORDINATOR_LOGGER)
    assert len(logger.filters) == 1

    with caplog.at_level(logging.INFO, logger=COORDINATOR_LOGGER):
        logger.error("Group Coordinator Request failed: %s", GroupCoordinatorNotAvailableError())
        logger.error("Group Coordinator Request failed: %s", GroupAuthorizationFailedError())

    (starting, refused) = caplog.records
    assert starting.levelno == logging.INFO
    assert "not ready yet (normal while it starts)" in starting.getMessage()
    assert "GroupCoordinatorNotAvailableError" in starting.getMessage()
    assert refused.levelno == logging.ERROR
