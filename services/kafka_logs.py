"""What aiokafka logs that is not an error for us: the broker's group coordinator coming up.

A fresh or just-started broker answers ``GroupCoordinatorNotAvailable`` (or
``CoordinatorLoadInProgress``) for a few seconds while it loads ``__consumer_offsets``; aiokafka
retries and then joins, but logs each try at ERROR. Those lines become INFO, saying so; any other
coordinator failure stays an ERROR.
"""

from __future__ import annotations

import logging

COORDINATOR_LOGGER = "aiokafka.consumer.group_coordinator"
_STARTING_UP = ("GroupCoordinatorNotAvailableError", "CoordinatorLoadInProgressError")


class CoordinatorStartUpFilter(logging.Filter):
    """Turns aiokafka's retried 'Group Coordinator Request failed' while the broker starts into INFO."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and record.getMessage().startswith("Group Coordinator Request failed"):
            if any(name in record.getMessage() for name in _STARTING_UP):
                record.levelno = logging.INFO
                record.levelname = "INFO"
                record.msg = "the broker's group coordinator is not ready yet (normal while it starts); retrying: %s"
        return True


def quiet_coordinator_start_up() -> None:
    """Install the filter on aiokafka's group coordinator logger (once)."""
    logger = logging.getLogger(COORDINATOR_LOGGER)
    if not any(isinstance(existing, CoordinatorStartUpFilter) for existing in logger.filters):
        logger.addFilter(CoordinatorStartUpFilter())
