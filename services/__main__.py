"""``python -m services``: the CRM Pulse command line (same as ``crm-pulse``)."""

from services.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
