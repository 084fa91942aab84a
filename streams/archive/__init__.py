"""The archive sink: ``crm.events`` into the PostgreSQL archive of ``services.archive``.

Run it with ``python -m streams.archive`` (``crm-pulse archive``).
"""
