"""Local Kafka and Redis servers for development, the demo and the tests; no Docker needed.

``up`` starts what the environment does not already provide (``KAFKA_BOOTSTRAP_SERVERS``,
``REDIS_URL``), reuses servers of ours that already run, and returns what it started; ``down``
stops them by the PIDs in their pid files. See ``layout`` for where files go.
"""

from services.localinfra.errors import LocalInfraError
from services.localinfra.stack import ServerStatus, client_environment, client_settings, down, status, up

__all__ = ["LocalInfraError", "ServerStatus", "client_environment", "client_settings", "down", "status", "up"]
