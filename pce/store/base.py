"""The key-value interface both PCE state backends implement (issue 13)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Change:
    """One key changed by a committed ``apply`` (seen by watchers): ``value`` None means deleted."""

    key: str
    value: bytes | None
    revision: int


class StateStore(Protocol):
    """Atomic, revisioned key-value storage for the PCE's desired state."""

    def read_all(self, prefix: str = "") -> tuple[dict[str, bytes], int]:
        """Every key under ``prefix`` with its value, and the store revision the read reflects."""
        ...

    def apply(self, puts: Mapping[str, bytes], deletes: Iterable[str] = ()) -> int:
        """Apply ``puts`` and ``deletes`` atomically and return the new revision; on failure raise, nothing applied."""
        ...

    def watch(self, prefix: str, from_revision: int, callback: Callable[[list[Change]], None]) -> Callable[[], None]:
        """Call ``callback`` with every committed change under ``prefix`` after ``from_revision``; returns a cancel."""
        ...

    def close(self) -> None:
        """Release connections and files."""
        ...
