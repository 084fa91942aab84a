"""The simulator's errors, rooted in one class::

SimulationError
├── InvalidSimulationConfig   a setting is out of range (also a ValueError)
└── SinkError                 records could not be delivered (server unreachable, bad answer)
"""

from __future__ import annotations


class SimulationError(Exception):
    """Root of the simulator's errors."""


class InvalidSimulationConfig(SimulationError, ValueError):
    """A simulation setting is out of range."""


class SinkError(SimulationError):
    """A sink could not deliver records (server unreachable, answer not understood...)."""
