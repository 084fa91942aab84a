"""The event and deal archive in PostgreSQL: its schema (alembic migrations), deal state, drill-down queries.

The sink that fills it is ``streams.archive``; the dashboard API reads it for drill-downs. Tables:

    events        every accepted event with every contract field, its scope ids and Kafka position
    deals         each deal's current state (stage, amount, status, scope of its latest deal event)
    deal_history  each deal event in the deal's (occurred_at, event_id) order with the state after it
    sink_offsets  the next offset per partition of the events topic, committed with the rows
    sink_counts   accepted, duplicate, rejected and skipped records, by the sink
"""
