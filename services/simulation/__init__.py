"""Realistic CRM events for the demo, load tests, benchmarks and integration tests.

- :mod:`.config`: what to simulate (:class:`SimulationConfig`).
- :mod:`.organisation`: managers in teams, lead sources, outcomes.
- :mod:`.generator`: :class:`Simulation`, pure and deterministic from a seed.
- :mod:`.business_hours`: working days and hours in the business time zone.
- :mod:`.faults`: duplicates, late deliveries and malformed records, each labelled with what
  a correct consumer must do with it (:class:`SimRecord`).
- :mod:`.sinks`: where records go: Kafka, the HTTP ingest endpoint, a JSONL file.
- :mod:`.pacing`: sending at a wall-clock rate or as fast as possible, with a progress line.

The command line is :mod:`services.simulator`.
"""

from services.simulation.config import SimulationConfig
from services.simulation.errors import InvalidSimulationConfig, SimulationError, SinkError
from services.simulation.faults import Expectation, FaultRates, SimRecord
from services.simulation.generator import Simulation

__all__ = [
    "Expectation",
    "FaultRates",
    "InvalidSimulationConfig",
    "SimRecord",
    "Simulation",
    "SimulationConfig",
    "SimulationError",
    "SinkError",
]
