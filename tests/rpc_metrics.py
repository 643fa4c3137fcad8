"""Reading the RPC metrics of this process (services/common/metrics.py) from the default registry."""

from __future__ import annotations

import asyncio

from prometheus_client import REGISTRY

COUNT_WAIT_STEPS = 200  # of 10 ms


def requests_total(method: str, code: str) -> float:
    return REGISTRY.get_sample_value("ledger_rpc_requests_total", {"method": method, "code": code}) or 0.0


def durations_count(method: str) -> float:
    return REGISTRY.get_sample_value("ledger_rpc_duration_seconds_count", {"method": method}) or 0.0


def method_labels() -> set[str]:
    return {
        sample.labels["method"]
        for family in REGISTRY.collect()
        if family.name == "ledger_rpc_requests"
        for sample in family.samples
    }


async def counted(method: str, code: str, expected: float) -> float:
    """The count once it reaches `expected` (or after a bounded wait): grpc.aio sends an abort's status to
    the client before the handler's exception unwinds through the interceptor that counts it."""
    for _ in range(COUNT_WAIT_STEPS):
        if requests_total(method, code) == expected:
            break
        await asyncio.sleep(0.01)
    return requests_total(method, code)
