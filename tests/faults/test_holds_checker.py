"""The holds checker fails when a hold promise is broken (each rule broken on purpose, one at a time)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.faults.history import Outcome
from tests.faults.holds import HoldCall, _check_calls, _check_rows


def hold(hold_id: int, status: str, amount: int = 10, captured: int = 0, key: str = "h-1") -> dict[str, Any]:
    return {
        "id": hold_id,
        "user_id": "u",
        "amount": amount,
        "captured_amount": captured,
        "status": status,
        "idempotency_key": key,
    }


def capture_row(hold_id: int, delta: int, count: int = 1) -> dict[str, Any]:
    return {"hold_id": hold_id, "n": count, "delta": delta}


def test_a_consistent_state_has_no_violation() -> None:
    holds = [hold(1, "active"), hold(2, "captured", captured=4, key="h-2"), hold(3, "expired", key="h-3")]
    assert _check_rows({"u": 10}, holds, {2: 1, 3: 1}, [capture_row(2, -4)]) == []


@pytest.mark.parametrize(
    ("held", "holds", "ends", "captures", "expected"),
    [
        pytest.param({"u": 7}, [hold(1, "active")], {}, [], "held 7 != active holds 10", id="held-cache-drift"),
        pytest.param({"u": 0}, [hold(1, "released")], {1: 2}, [], "2 terminal events", id="ended-twice"),
        pytest.param({"u": 10}, [hold(1, "active")], {1: 1}, [], "1 terminal events", id="active-but-ended"),
        pytest.param(
            {"u": 0},
            [hold(1, "captured", captured=11)],
            {1: 1},
            [capture_row(1, -11)],
            "captured 11 of 10",
            id="captured-more-than-held",
        ),
        pytest.param(
            {"u": 0},
            [hold(1, "captured", captured=4)],
            {1: 1},
            [capture_row(1, -4, count=2)],
            "journal (2, 4)",
            id="captured-twice-in-journal",
        ),
        pytest.param(
            {"u": 0}, [hold(1, "captured", captured=4)], {1: 1}, [], "journal None", id="capture-not-journaled"
        ),
    ],
)
def test_each_broken_rule_is_reported(held, holds, ends, captures, expected) -> None:
    violations = _check_rows(held, holds, ends, captures)
    assert any(expected in violation for violation in violations), violations


def test_acknowledged_calls_must_be_in_the_database() -> None:
    reserve = HoldCall("reserve", "u", "h-9", 5, outcome=Outcome.OK)
    refused = HoldCall("reserve", "u", "h-1", 5, outcome=Outcome.REFUSED)
    capture = HoldCall("capture", "u", "c-1", 3, hold_id=1, outcome=Outcome.OK)
    violations = _check_calls([hold(1, "released")], [reserve, refused, capture])
    assert len(violations) == 3, violations
