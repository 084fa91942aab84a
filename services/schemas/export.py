"""Write the JSON Schema of CRM events to docs/schemas/: ``python -m services.schemas.export``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, TypeAdapter

from services.schemas.events import CrmEvent

DEFAULT_OUT = Path("docs/schemas/crm-event.schema.json")


def event_json_schema() -> dict[str, Any]:
    """The JSON Schema of one CRM event (a union tagged by ``type``)."""
    adapter: TypeAdapter[Any] = TypeAdapter(Annotated[CrmEvent, Field(discriminator="type")])
    schema = adapter.json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "CRM Pulse event"
    schema["description"] = (
        "One CRM event (CONTRACT section 1). HTTP ingest takes one such object or an array of them. "
        "JSON null counts as absent; unknown fields are ignored."
    )
    return schema


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.schemas.export", description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"where to write (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(event_json_schema(), indent=2, sort_keys=True) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
