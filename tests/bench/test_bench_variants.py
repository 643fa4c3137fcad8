"""Variants side by side (`--variant`): each later variant's ratios to the first, per workload."""

from __future__ import annotations

from typing import Any

from bench.report import cpu_ms_per_op_total, variant_ratios


def _figures(ops_per_second: float, cpu_seconds: dict[str, float], ops: int = 1000, **extra: Any) -> dict[str, Any]:
    return {"ops_per_second": ops_per_second, "ops": ops, "cpu_seconds": cpu_seconds, **extra}


def test_cpu_per_op_sums_every_process_or_postgres_nodes_only() -> None:
    figures = _figures(100.0, {"ledger": 1.0, "postgres": 2.0, "postgres_worker1": 0.5, "load": 0.5}, ops=1000)
    assert cpu_ms_per_op_total(figures) == 4.0
    assert cpu_ms_per_op_total(figures, "postgres") == 2.5
    assert cpu_ms_per_op_total({**figures, "failed": True}) is None
    assert cpu_ms_per_op_total(_figures(0.0, {"postgres": 1.0}, ops=0)) is None


def test_each_ratio_is_taken_inside_a_round_then_the_median() -> None:
    pg_rounds = [{"credit": _figures(100.0, {"postgres": 1.0})} for _ in range(3)]
    citus_rounds = [
        {"credit": _figures(50.0, {"postgres": 1.0, "postgres_worker1": 1.0})},
        {"credit": _figures(10.0, {"postgres": 3.0, "postgres_worker1": 1.0})},
        {"credit": _figures(40.0, {"postgres": 2.0, "postgres_worker1": 1.0})},
    ]
    found = variant_ratios({"pg": pg_rounds, "citus": citus_rounds}, {"pg": pg_rounds[0], "citus": citus_rounds[2]})
    credit = found["citus / pg"]["credit"]
    assert credit["ops_per_second"] == {"value": 0.4, "rounds": [0.5, 0.1, 0.4]}
    assert credit["cpu_ms_per_op_total"] == {"value": 3.0, "rounds": [2.0, 4.0, 3.0]}
    assert credit["cpu_ms_per_op_postgres"]["value"] == 3.0


def test_a_run_once_workload_compares_its_one_run_and_a_failed_side_gives_no_ratio() -> None:
    workloads = {
        "pg": {"webhook_e2e": _figures(500.0, {"postgres": 1.0}), "debit": _figures(10.0, {"postgres": 1.0})},
        "citus": {
            "webhook_e2e": _figures(100.0, {"postgres": 1.0, "postgres_worker2": 1.0}),
            "debit": {"workload": "debit", "failed": True, "errors": 1},
        },
    }
    found = variant_ratios({"pg": [], "citus": []}, workloads)["citus / pg"]
    assert found["webhook_e2e"]["ops_per_second"] == {"value": 0.2}
    assert found["webhook_e2e"]["cpu_ms_per_op_total"] == {"value": 2.0}
    assert found["debit"] == {}


def test_one_variant_has_nothing_to_compare() -> None:
    assert variant_ratios({"pg": []}, {"pg": {"credit": _figures(1.0, {"postgres": 1.0})}}) == {}
