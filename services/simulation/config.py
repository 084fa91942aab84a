"""What to simulate: the organisation's size, the configured business rules, the fault rates."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from services.settings import BusinessSettings
from services.simulation.errors import InvalidSimulationConfig
from services.simulation.faults import FaultRates


@dataclass(frozen=True)
class SimulationConfig:
    """What to simulate: the organisation, the configured business rules and the fault rates."""

    teams: int = 3
    managers: int = 12
    """Total managers, spread evenly over the teams; every manager is in a team."""
    timezone: str = "UTC"
    stages: tuple[str, ...] = ("new", "qualified", "proposal", "negotiation")
    currency: str = "USD"
    history_retention_days: int = 730
    activity: float = 1.0
    """Scales every manager's calls and meetings per day (1 = realistic; less makes long histories quick)."""
    duplicates: float = 0.0
    out_of_order: float = 0.0
    malformed: float = 0.0

    def __post_init__(self) -> None:
        if self.teams < 1 or self.managers < self.teams:
            raise InvalidSimulationConfig(
                f"need at least one team and one manager per team, got teams={self.teams}, managers={self.managers}"
            )
        if not self.stages:
            raise InvalidSimulationConfig("the funnel needs at least one open stage")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise InvalidSimulationConfig(f"unknown time zone {self.timezone!r}: use an IANA name") from exc
        if not 0.0 < self.activity <= 1.0:
            raise InvalidSimulationConfig(f"activity scales calls and meetings, in (0, 1], got {self.activity}")
        for name in ("duplicates", "out_of_order", "malformed"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise InvalidSimulationConfig(f"{name} is a fraction in [0, 1], got {getattr(self, name)}")
        if self.duplicates + self.malformed >= 1.0:
            raise InvalidSimulationConfig(
                f"duplicates + malformed must be below 1, got {self.duplicates} + {self.malformed}"
            )

    @classmethod
    def from_business(cls, business: BusinessSettings, **options: Any) -> SimulationConfig:
        """A config following the configured time zone, funnel, currency and retention."""
        return cls(
            timezone=business.timezone,
            stages=business.stage_names,
            currency=business.currency,
            history_retention_days=business.history_retention_days,
            **options,
        )

    @property
    def fault_rates(self) -> FaultRates:
        return FaultRates(duplicates=self.duplicates, out_of_order=self.out_of_order, malformed=self.malformed)
