"""Run the alerts worker: ``python -m alerts.worker`` (or ``crm-pulse alerts``).

One process: it evaluates the rules on ``kpi.updates`` and the clock, commits its state to Redis
atomically with the offsets it reached, relays the notifications to the outbox topic, and runs one
sender per receiver. Only the holder of a Redis lease evaluates; a second worker waits (standby).

aiokafka rather than faust: the worker assigns itself every partition of kpi.updates and seeks to
the offsets its state holds (no group rebalances, no faust offset commits to reconcile), and it
interleaves records with a clock tick in one plain loop. faust would add its per-message cost and
a web server for nothing here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Mapping

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from redis.asyncio import Redis

from alerts import metrics
from alerts.deals import DealFacts
from alerts.evaluator import CURRENT, BucketRef, Evaluator, KpiUpdate, current_bucket, previous_bucket, utc_now
from alerts.outbox import OutboxRelay, ReceiverSender
from alerts.receivers import deliver
from alerts.rules import load_config, merge_rules
from alerts.store import LEASE_S, AlertStore
from services.alert_config import read_dynamic, restore_alert_config
from services.group_leave import leave_quietly
from services.kafka import consumer as kafka_consumer
from services.kafka import ensure_topics, partition_ids
from services.kafka import producer as kafka_producer
from services.kafka_logs import quiet_coordinator_start_up
from services.kpis.contributions import DealEvent, from_us
from services.kpis.deal_clock import US_PER_S, deal_clock
from services.kpis.measures import decode_hash
from services.membership import Membership
from services.quotas import scope_quota_units
from services.schemas.alerts import AlertsConfig, Notification, Receiver
from services.settings import Settings, load_settings
from services.topics import AlertNames, RedisKeys

log = logging.getLogger("alerts.worker")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


OUTBOX_PARTITIONS = 1
"""Notifications are few; one partition keeps each receiver's in order."""


class AlertsWorker:
    """The evaluation loop and its helpers, for one deployment."""

    def __init__(
        self, settings: Settings, config: AlertsConfig, redis: Redis, *, lease_owner: str | None = None
    ) -> None:
        self.settings = settings
        self.file_config = config
        self.redis = redis
        self.names = AlertNames.from_settings(settings)
        self.keys = RedisKeys.from_settings(settings)
        self.store = AlertStore(redis, self.names, history_maxlen=settings.alerts.history_maxlen, owner=lease_owner)
        self.evaluator = Evaluator(
            settings.business.zone,
            probabilities={stage.name: stage.probability for stage in settings.business.funnel},
            currency=settings.business.currency,
        )
        self.measures: dict[BucketRef, dict[str, int]] = {}
        self.team_members: dict[str, frozenset[str]] = {}

    async def refresh_config(self) -> None:
        """The file's configuration with the API's rules, silences and acknowledgements."""
        api_rules, silences, acks = await read_dynamic(self.redis, self.names)
        config = merge_rules(self.file_config, api_rules)
        self.evaluator.configure(config, silences=silences, acks=acks)
        teams = {rule.scope.team for rule in config.rules if rule.scope.team is not None}
        members: dict[str, frozenset[str]] = {}
        for team in sorted(teams):
            found = await self.redis.smembers(self.keys.team_managers(team))
            members[team] = frozenset(m.decode() if isinstance(m, bytes) else m for m in found)
        self.team_members = members

    async def fetch_measures(self, wanted: set[BucketRef]) -> None:
        missing = sorted(ref for ref in wanted if ref not in self.measures)
        if not missing:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for scope, granularity, bucket in missing:
                if granularity == CURRENT:
                    pipe.hgetall(self.keys.current(scope))
                else:
                    pipe.hgetall(self.keys.bucket(scope, granularity, bucket))  # type: ignore[arg-type]
            rows = await pipe.execute()
        for ref, raw in zip(missing, rows, strict=True):
            self.measures[ref] = decode_hash(raw)

    def forget_old_measures(self) -> None:
        now = utc_now()
        keep = set()
        for period in ("day", "month"):
            bucket = current_bucket(period, now, self.settings.business.zone)
            keep |= {(period, bucket), (period, previous_bucket(period, bucket))}
        keep.add((CURRENT, ""))
        self.measures = {ref: m for ref, m in self.measures.items() if (ref[1], ref[2]) in keep}

    async def fetch_quotas(self, scopes: set[str]) -> None:
        """The current month's quota of each scope a quota rule watches (read again at every evaluation:
        quota changes reach Redis, not kpi.updates)."""
        if not scopes:
            self.evaluator.quotas = {}
            return
        month = current_bucket("month", utc_now(), self.settings.business.zone)
        teams = sorted({scope[2:] for scope in scopes if scope.startswith("t:")})
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys.quotas(month))
            for team in teams:
                pipe.smembers(self.keys.team_month_managers(team, month))
            raw = await pipe.execute()
        month_quotas = decode_hash(raw[0])
        members = {team: [_text(m) for m in found] for team, found in zip(teams, raw[1:], strict=True)}
        quotas: dict[str, int | None] = {}
        for scope in scopes:
            if scope == "c":
                quotas[scope] = scope_quota_units("company", "all", month_quotas)
            elif scope.startswith("t:"):
                quotas[scope] = scope_quota_units("team", scope[2:], month_quotas, members.get(scope[2:], ()))
            elif scope.startswith("m:"):
                quotas[scope] = scope_quota_units("manager", scope[2:], month_quotas)
        self.evaluator.quotas = quotas

    async def read_deals(self) -> dict[str, DealFacts | None]:
        """The open deals some deal rule could breach with, and those with a series (None: not open)."""
        cutoffs = self.evaluator.deal_queries(utc_now())
        wanted = set(self.evaluator.deal_series_ids())
        indexes = {"stage": self.keys.open_deals_by_stage_entry, "activity": self.keys.open_deals_by_activity}
        for index, cutoff in cutoffs.items():
            found = await self.redis.zrangebyscore(indexes[index], "-inf", cutoff.timestamp())
            wanted |= {_text(deal_id) for deal_id in found if isinstance(deal_id, bytes | str)}
        if not wanted:
            return {}
        ids = sorted(wanted)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zmscore(self.keys.open_deals_by_activity, ids)
            pipe.mget([self.keys.deal(deal_id) for deal_id in ids])
            activity, histories = await pipe.execute()
        deals: dict[str, DealFacts | None] = {}
        for deal_id, active_s, raw in zip(ids, activity, histories, strict=True):
            clock = deal_clock(DealEvent.from_row(row) for row in orjson.loads(raw)) if raw else None
            if clock is None or active_s is None:
                deals[deal_id] = None
                continue
            latest_us = max(clock.latest_us, round(float(active_s) * US_PER_S))
            deals[deal_id] = DealFacts(
                deal_id=deal_id,
                stage=clock.stage,
                stage_since=from_us(clock.stage_since_us),
                last_activity=from_us(latest_us),
                manager_id=clock.manager_id,
                team_id=clock.team_id,
            )
        return deals

    async def evaluate(
        self,
        records: list[tuple[str, int, bytes]],
        offsets: Mapping[str, int],
        deals: Mapping[str, DealFacts | None] | None = None,
    ) -> dict[str, int]:
        """Evaluate a batch of kpi.updates records, the open deals read (if any) and the clock, and
        commit; the new offsets."""
        began = time.perf_counter()
        now = utc_now()
        updates: list[KpiUpdate] = []
        new_offsets = dict(offsets)
        for tp, offset, value in records:
            new_offsets[tp] = offset + 1
            try:
                updates.append(KpiUpdate.parse(value))
            except (ValueError, KeyError, TypeError) as exc:
                log.error("skipping malformed kpi.updates record %s@%d: %r", tp, offset, exc)
        for update in updates:
            if update.granularity in ("day", "month", CURRENT):
                self.measures[(update.scope, update.granularity, update.bucket)] = update.measures
        await self.fetch_measures(self.evaluator.needed_buckets(updates, now))
        await self.fetch_quotas(self.evaluator.quota_scopes(updates))
        for update in updates:
            self.evaluator.apply_update(update, now, self.measures, self.team_members)
        if deals is not None:
            self.evaluator.apply_deals(now, deals, self.team_members)
        self.evaluator.tick(now, self.measures)
        changes = self.evaluator.take_changes()
        moved = {tp: (offsets.get(tp), new) for tp, new in new_offsets.items() if offsets.get(tp) != new}
        if changes or moved:
            await self.store.commit(changes, moved)
        done = time.time()
        for update in updates:
            if update.committed_ms:
                metrics.EVALUATION_LATENCY.observe(max(0.0, done - update.committed_ms / 1000))
        metrics.EVALUATION_DURATION.observe(time.perf_counter() - began)
        rules = self.evaluator.rules
        metrics.set_firing(
            (record.rule_id, rules[record.rule_id].severity)
            for record in self.evaluator.series.values()
            if record.state.status == "firing" and record.rule_id in rules
        )
        for note in changes.notifications:
            log.info("queued notification %s to %s (%s)", note.id, note.receiver, note.status)
        return new_offsets


TOPIC_WAIT_S = 30.0


async def _partitions(settings: Settings, topic: str) -> list[int]:
    """The partition numbers of a topic (from the broker: a consumer's metadata may not list it yet).

    A topic created a moment ago (on a fresh broker, by this process or the stream worker) may not
    be in the broker's metadata yet: it is asked again until ``TOPIC_WAIT_S`` have passed.
    """
    deadline = time.monotonic() + TOPIC_WAIT_S
    while not (found := await partition_ids(settings, topic)):
        if time.monotonic() >= deadline:
            raise RuntimeError(f"topic {topic!r} has no partitions after {TOPIC_WAIT_S:.0f} s (does it exist?)")
        await asyncio.sleep(0.2)
    return found


async def _wait_for_lease(store: AlertStore) -> None:
    while not await store.hold_lease():
        log.info("another alerts worker holds the lease; waiting")
        await asyncio.sleep(LEASE_S / 3)


async def run(settings: Settings, config: AlertsConfig) -> None:
    """Run until cancelled."""
    names = AlertNames.from_settings(settings)
    await ensure_topics(settings, [settings.kafka.updates_topic], settings.kafka.partitions)
    await ensure_topics(settings, [names.outbox_topic], OUTBOX_PARTITIONS)
    redis = Redis.from_url(settings.redis.url, health_check_interval=10)
    # The lease's owner is this process's slot on the host (as the consumer groups' static members are):
    # a SIGKILLed worker's replacement in the slot takes the lease back at once instead of after LEASE_S.
    lease_slot = Membership(settings, f"{settings.alerts.consumer_group}.lease")
    worker = AlertsWorker(settings, config, redis, lease_owner=lease_slot.instance_id)
    await _wait_for_lease(worker.store)
    restored = await restore_alert_config(settings, redis)
    log.info("alert rules, silences and acks: %d in the config topic, mirrored to Redis", restored)
    series, groups = await worker.store.load()
    worker.evaluator.series, worker.evaluator.groups = series, groups
    offsets = await worker.store.offsets()
    log.info("loaded %d series and %d groups; offsets %s", len(series), len(groups), offsets)

    # No consumer group: the offsets live in Redis with the state (services.kafka.consumer would use a group).
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap_servers,
        client_id="crm-pulse-alerts",
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    producer = kafka_producer(settings, acks="all")
    await consumer.start()
    await producer.start()
    tasks: list[asyncio.Task[None]] = []
    senders: list[AIOKafkaConsumer] = []
    memberships: list[Membership] = []
    try:
        partitions = await _partitions(settings, settings.kafka.updates_topic)
        tps = [TopicPartition(settings.kafka.updates_topic, p) for p in partitions]
        consumer.assign(tps)
        for tp in tps:
            stored = offsets.get(f"{tp.topic}:{tp.partition}")
            if stored is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, stored)
        log.info("evaluating %s partitions %s", settings.kafka.updates_topic, partitions)
        tasks.append(asyncio.create_task(OutboxRelay(redis, names, producer).run()))
        for receiver in config.receivers:
            group = f"{settings.alerts.consumer_group}.outbox.{receiver.name}"
            membership = Membership(settings, group)  # a restart in this slot takes the partitions back at once
            memberships.append(membership)
            sender_consumer = kafka_consumer(
                settings,
                names.outbox_topic,
                group_id=group,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                **membership.consumer_options(),
            )
            await sender_consumer.start()
            senders.append(sender_consumer)
            tasks.append(asyncio.create_task(_sender(settings, redis, names, sender_consumer, receiver).run()))
        interval = settings.alerts.evaluation_interval_s
        last_refresh = 0.0
        last_deals = 0.0
        while True:
            for task in tasks:
                if task.done():
                    task.result()  # a helper task died: stop (and be restarted) rather than limp on
            if time.monotonic() - last_refresh >= interval:
                if not await worker.store.hold_lease():
                    raise RuntimeError("lost the alerts lease to another worker; stopping")
                await worker.refresh_config()
                worker.forget_old_measures()
                last_refresh = time.monotonic()
            batches = await consumer.getmany(timeout_ms=int(interval * 1000), max_records=1000)
            records = [
                (f"{tp.topic}:{tp.partition}", message.offset, message.value)
                for tp, messages in batches.items()
                for message in messages
                if message.value is not None
            ]
            if records:
                log.debug("evaluating %d kpi.updates records", len(records))
            deals = None
            if time.monotonic() - last_deals >= settings.alerts.deal_evaluation_interval_s:
                deals = await worker.read_deals()
                last_deals = time.monotonic()
            offsets = await worker.evaluate(records, offsets, deals)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for sender_consumer in senders:
            await sender_consumer.stop()
        for membership in memberships:  # static members do not leave on their own: leave, then free the slot
            await leave_quietly(settings.kafka.bootstrap_servers, membership.group, membership.instance_id)
            membership.release()
        await consumer.stop()
        await producer.stop()
        await worker.store.release_lease()
        lease_slot.release()
        await redis.aclose()


def _sender(
    settings: Settings, redis: Redis, names: AlertNames, consumer: AIOKafkaConsumer, receiver: Receiver
) -> ReceiverSender:
    timeout_s = settings.alerts.send_timeout_s

    async def send(target: Receiver, notification: Notification) -> None:
        await deliver(target, notification, timeout_s=timeout_s)

    return ReceiverSender(
        redis,
        names,
        consumer,
        receiver,
        send,
        retry_initial_s=settings.alerts.retry_initial_s,
        retry_max_s=settings.alerts.retry_max_s,
        sent_ttl_s=settings.alerts.sent_ttl_days * 86_400,
        history_maxlen=settings.alerts.history_maxlen,
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="crm-pulse alerts",
        description="Evaluate alert rules on kpi.updates and send notifications (Slack, email, webhook).",
        epilog="The rules, route tree and receivers come from the YAML file named by --config or "
        "CRM_PULSE_ALERTS__CONFIG_FILE (see docs/alerts.md); rules, silences and acknowledgements "
        "can also be written over the API.",
    )
    parser.add_argument("--config", default=None, help="YAML file of rules, route and receivers")
    parser.add_argument("--check", action="store_true", help="validate the configuration, print a summary, exit")
    parser.add_argument("--loglevel", default="info", choices=["debug", "info", "warning", "error"])
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = load_settings()
    logging.basicConfig(level=args.loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_coordinator_start_up()
    path = args.config or settings.alerts.config_file
    try:
        config = load_config(path) if path else AlertsConfig()
    except Exception as exc:
        print(f"crm-pulse alerts: {exc}", file=sys.stderr)
        return 2
    if args.check:
        print(f"{len(config.rules)} rules, {len(config.receivers)} receivers: configuration is valid")
        return 0
    metrics.serve(settings.alerts.metrics_host, settings.alerts.metrics_port)

    async def main_task() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await run(settings, config)

    asyncio.run(main_task())
    return 0


if __name__ == "__main__":
    sys.exit(main())
