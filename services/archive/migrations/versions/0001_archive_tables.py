"""The archive's tables: events, deals, deal_history, sink_offsets, sink_counts.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE events (
            event_id text PRIMARY KEY,
            type text NOT NULL,
            occurred_at timestamptz NOT NULL,
            utc_offset_s integer NOT NULL,
            manager_id text NOT NULL,
            team_id text,
            deal_id text,
            customer_id text,
            amount numeric(20, 4),
            currency text,
            stage text,
            lead_source text,
            lost_reason text,
            duration_s bigint,
            outcome text,
            kafka_partition integer NOT NULL,
            kafka_offset bigint NOT NULL
        );
        CREATE INDEX events_time ON events (occurred_at, event_id);
        CREATE INDEX events_manager_time ON events (manager_id, occurred_at);
        CREATE INDEX events_team_time ON events (team_id, occurred_at) WHERE team_id IS NOT NULL;
        CREATE INDEX events_deal ON events (deal_id) WHERE deal_id IS NOT NULL;

        CREATE TABLE deals (
            deal_id text PRIMARY KEY,
            created_event_id text,
            created_at timestamptz,
            customer_id text,
            lead_source text NOT NULL,
            status text NOT NULL,
            stage text,
            amount numeric(20, 4),
            manager_id text NOT NULL,
            team_id text,
            last_event_at timestamptz NOT NULL,
            events integer NOT NULL
        );
        CREATE INDEX deals_customer ON deals (customer_id) WHERE customer_id IS NOT NULL;
        CREATE INDEX deals_open_stage ON deals (stage) WHERE status = 'open';

        CREATE TABLE deal_history (
            deal_id text NOT NULL,
            seq integer NOT NULL,
            event_id text NOT NULL UNIQUE,
            type text NOT NULL,
            occurred_at timestamptz NOT NULL,
            stage text,
            amount numeric(20, 4),
            status text NOT NULL,
            stage_changed boolean NOT NULL,
            amount_changed boolean NOT NULL,
            PRIMARY KEY (deal_id, seq)
        );

        CREATE TABLE sink_offsets (
            topic text NOT NULL,
            partition integer NOT NULL,
            next_offset bigint NOT NULL,
            PRIMARY KEY (topic, partition)
        );

        CREATE TABLE sink_counts (
            name text PRIMARY KEY,
            value bigint NOT NULL
        );
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE sink_counts, sink_offsets, deal_history, deals, events")
