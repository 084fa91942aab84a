"""Bench results: one JSON line per run in ``bench/results/<name>.jsonl``, and small figures helpers."""

from __future__ import annotations

import json
import math
import platform
import subprocess
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def git_commit() -> dict[str, Any]:
    """The checked-out commit and whether the work tree had changes (the figures are of that code)."""
    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    return {"commit": git("rev-parse", "HEAD") or None, "dirty": bool(git("status", "--porcelain"))}


SOURCE_DIRS = ("services", "streams", "dashboard_api")


def source_digest() -> str:
    """A fingerprint of the code under test (every .py and .lua file of the measured packages, as on disk).

    The work tree may change while a bench runs (other people edit it); comparing this before and
    after each stage tells whether all stages ran the same code.
    """
    import hashlib

    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha1(usedforsecurity=False)
    for folder in SOURCE_DIRS:
        for path in sorted((root / folder).rglob("*")):
            if path.suffix in (".py", ".lua") and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(root)).encode() + b"\0")
                try:
                    digest.update(path.read_bytes())
                except OSError:
                    continue
    return digest.hexdigest()[:12]


def machine() -> dict[str, Any]:
    import os

    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def append_result(name: str, record: Mapping[str, Any]) -> Path:
    """Append one run to ``bench/results/<name>.jsonl``; the file's path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.jsonl"
    line = {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "bench": name,
        "git": git_commit(),
        "machine": machine(),
        **record,
    }
    with path.open("a") as out:
        out.write(json.dumps(line, default=str) + "\n")
    return path


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is missing or the denominator is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def percentile(ordered: Sequence[float], share: float) -> float | None:
    """The ``share`` quantile (0..1) of an already sorted sequence, nearest-rank."""
    if not ordered:
        return None
    rank = max(1, math.ceil(share * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def fmt(value: float | None, spec: str = ",.0f") -> str:
    return "n/a" if value is None else format(value, spec)
