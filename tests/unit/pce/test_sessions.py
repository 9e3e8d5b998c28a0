"""NAP session bookkeeping: versions only on change, ACK/NACK per NAP, NACK backoff (no push loops)."""

from __future__ import annotations

from pce.sessions import SessionTable


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_versions_increase_only_when_the_view_changes_and_continue_after_restart() -> None:
    clock = Clock()
    table: SessionTable[str] = SessionTable(clock)
    table.open("nap", last_applied_version=7)  # a restarted PCE never goes back below what the NAP applied
    assert table.offer("nap", "view-a") == 8
    assert table.offer("nap", "view-a") is None
    assert table.offer("nap", "view-b") == 9
    table.ack("nap", 9)
    assert table.records["nap"].acked_version == 9
    table.close("nap")
    assert table.offer("nap", "view-c") is None  # not connected: nothing to push to


def test_repeated_nacks_back_off_exponentially_and_pending_views_go_out_after() -> None:
    clock = Clock()
    table: SessionTable[str] = SessionTable(clock, backoff_start_s=1.0)
    table.open("nap", 0)
    v = table.offer("nap", "a")
    assert v == 1
    assert table.nack("nap", 1, 3, "bad") == 1.0
    assert table.offer("nap", "b") is None and table.records["nap"].pending
    assert table.due() == []
    clock.t += 1.0
    assert table.due() == ["nap"]
    assert table.offer("nap", "b") == 2
    assert table.nack("nap", 2, 3, "bad") == 2.0
    assert table.nack("nap", 2, 3, "bad") == 4.0
    rec = table.records["nap"]
    assert rec.nack_count == 3 and rec.last_nack_message == "bad"
    clock.t += 4.0
    table.ack("nap", 2)
    assert rec.consecutive_nacks == 0 and rec.hold_until == 0.0
