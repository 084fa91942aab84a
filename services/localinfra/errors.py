"""Errors of the local infrastructure.

LocalInfraError                 anything that stops ``infra up/down`` from doing its job
├── MissingToolError            a program we need (java, mvn, redis-server) is not installed
├── FetchError                  Maven could not fetch the Kafka jars
├── PortInUseError              the port of one of our servers is taken by some other process
├── ServerStartError            a server did not become ready before its deadline
└── ServerNotReachableError     a server the environment points at does not answer
"""

from __future__ import annotations


class LocalInfraError(Exception):
    """Root of the errors of ``services.localinfra``."""


class MissingToolError(LocalInfraError):
    """A program we need is not installed."""


class FetchError(LocalInfraError):
    """Maven could not fetch the Kafka jars."""


class PortInUseError(LocalInfraError):
    """A port of ours answers, but not from a process we started."""


class ServerStartError(LocalInfraError):
    """A server exited or did not become ready before its deadline."""


class ServerNotReachableError(LocalInfraError):
    """A server named by the environment does not answer."""


START_SERVERS_HINT = (
    "start the local servers with 'crm-pulse infra up' (or 'crm-pulse demo'), or point REDIS_URL and "
    "KAFKA_BOOTSTRAP_SERVERS at running ones"
)
"""What a command says after 'cannot reach Redis or Kafka'."""
