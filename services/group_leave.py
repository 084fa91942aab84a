"""A static group member's planned stop: leave the consumer group at once (issue 19).

A dynamic member sends LeaveGroup when it stops; a static member (``group.instance.id``) does not, by
design, so that a restart in its slot takes its partitions back without a rebalance. On a planned
stop that is not followed by a restart (a scale-down, a moved machine) its partitions would then sit
idle until the session timeout. So every product process that joined as a static member leaves
explicitly when it stops on purpose (SIGTERM, Ctrl-C, a clean end): the others take its partitions
at their next heartbeat, and a replacement in the same slot simply joins again.

aiokafka has no request for that: LeaveGroup v3 (Kafka >= 2.4, KIP-345) names members by their
instance id, the way Kafka's admin ``removeMembersFromConsumerGroup`` does, with an unknown member
id. This module defines that one request and sends it to the group's coordinator.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from aiokafka.client import AIOKafkaClient, ConnectionGroup, CoordinationType
from aiokafka.errors import for_code
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import Array, Int16, Int32, Schema, String

log = logging.getLogger(__name__)

UNKNOWN_MEMBER_ID = ""
"""LeaveGroup v3 finds a static member by its instance id when the member id is unknown."""


class _LeaveGroupResponseV3(Response):  # type: ignore[misc]
    API_KEY = 13
    API_VERSION = 3
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("error_code", Int16),
        (
            "members",
            Array(("member_id", String("utf-8")), ("group_instance_id", String("utf-8")), ("error_code", Int16)),
        ),
    )


class _LeaveGroupRequestV3(RequestStruct):  # type: ignore[misc]
    API_KEY = 13
    API_VERSION = 3
    RESPONSE_TYPE = _LeaveGroupResponseV3
    SCHEMA = Schema(
        ("group", String("utf-8")),
        ("members", Array(("member_id", String("utf-8")), ("group_instance_id", String("utf-8")))),
    )


class StaticLeaveRequest(Request[_LeaveGroupRequestV3]):  # type: ignore[misc]
    """LeaveGroup for static members, by instance id."""

    API_KEY = 13

    def __init__(self, group: str, instance_ids: list[str]) -> None:
        self.group = group
        self.instance_ids = instance_ids

    def build(self, request_struct_class: type[_LeaveGroupRequestV3]) -> _LeaveGroupRequestV3:
        return request_struct_class(self.group, [(UNKNOWN_MEMBER_ID, instance) for instance in self.instance_ids])


class LeaveFailed(RuntimeError):
    """The coordinator refused the leave (the member stays until its session timeout)."""


async def leave_group(
    bootstrap_servers: str, group: str, instance_id: str, client_options: Mapping[str, Any] | None = None
) -> None:
    """Remove the static member ``instance_id`` from ``group`` now (raises LeaveFailed on a refusal)."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap_servers, client_id="crm-pulse-leave", **(client_options or {}))
    try:
        await client.bootstrap()
        node = await client.coordinator_lookup(CoordinationType.GROUP, group)
        response = await client.send(node, StaticLeaveRequest(group, [instance_id]), group=ConnectionGroup.COORDINATION)
    finally:
        await client.close()
    codes = [response.error_code, *(code for _, _, code in response.members)]
    failed = [for_code(code).__name__ for code in codes if code != 0]
    if failed:
        raise LeaveFailed(f"leaving group {group} as {instance_id}: {', '.join(failed)}")


async def leave_quietly(
    bootstrap_servers: str, group: str, instance_id: str | None, client_options: Mapping[str, Any] | None = None
) -> None:
    """``leave_group`` for a stopping process: a failure is logged (the session timeout still bounds it)."""
    if instance_id is None:
        return
    try:
        await leave_group(bootstrap_servers, group, instance_id, client_options)
    except Exception as error:  # a stop must finish; the session timeout is the fallback
        log.warning(
            "could not leave consumer group %s as %s (%s): the session timeout ends it", group, instance_id, error
        )
    else:
        log.info("left consumer group %s as static member %s", group, instance_id)
