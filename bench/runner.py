"""Runs one measured load: spawns the load processes, starts them together, meters CPU over the window."""

from __future__ import annotations

import multiprocessing
import queue
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from bench import settings
from bench.load import LoadResult, LoadSpec, process_main
from bench.report import latency_fields
from bench.stack import CpuMeter, Root, with_unaccounted

RESULT_WAIT_SECONDS_EXTRA = 120.0  # after the window: in-flight calls, webhook redeliveries, pickling


@dataclass(frozen=True)
class Split:
    processes: int
    callers: tuple[int, ...]
    channels: tuple[int, ...]


def split(concurrency: int, processes_max: int) -> Split:
    """Callers spread over at most `processes_max` processes; up to CHANNELS_PER_PROCESS_MAX connections each."""
    processes = max(1, min(processes_max, concurrency))
    callers = tuple(
        concurrency // processes + (1 if index < concurrency % processes else 0) for index in range(processes)
    )
    channels = tuple(max(1, min(settings.CHANNELS_PER_PROCESS_MAX, count)) for count in callers)
    return Split(processes, callers, channels)


def specs_for(base: LoadSpec, concurrency: int, processes_max: int) -> list[LoadSpec]:
    layout = split(concurrency, processes_max)
    return [
        replace(base, process_index=index, callers=layout.callers[index], channels=layout.channels[index])
        for index in range(layout.processes)
    ]


def _sleep_until(instant: float) -> None:
    delay = instant - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def run_load(specs: list[LoadSpec], cpu_roots: Mapping[str, Root]) -> tuple[list[LoadResult], dict[str, Any]]:
    """Run the load processes; returns their results and the window's CPU figures."""
    context = multiprocessing.get_context("spawn")
    ready_queue = context.Queue()
    result_queue = context.Queue()
    start_queues = [context.Queue() for _ in specs]
    processes = [
        context.Process(
            target=process_main,
            args=(spec, ready_queue, start_queues[index], result_queue),
            name=f"bench-load-{index}",
            daemon=True,
        )
        for index, spec in enumerate(specs)
    ]
    for process in processes:
        process.start()
    try:
        _wait_ready(ready_queue, len(specs))
        warmup, duration = specs[0].warmup_seconds, specs[0].duration_seconds
        start_at = time.monotonic() + settings.LOAD_START_DELAY_SECONDS
        for start_queue in start_queues:
            start_queue.put(start_at)
        meter = CpuMeter(dict(cpu_roots))
        _sleep_until(start_at + warmup)
        meter.start()
        _sleep_until(start_at + warmup + duration)
        cpu_seconds, machine = meter.stop()
        results = _collect(result_queue, len(specs), RESULT_WAIT_SECONDS_EXTRA)
    finally:
        for process in processes:
            process.join(timeout=settings.SERVICE_STOP_SECONDS_MAX)
            if process.is_alive():
                process.terminate()
    cpu_seconds["load"] = round(sum(result.cpu_seconds for result in results), 3)
    return results, {"cpu_seconds": cpu_seconds, "machine_window": with_unaccounted(cpu_seconds, machine)}


def _wait_ready(ready_queue: Any, count: int) -> None:
    deadline = time.monotonic() + settings.LOAD_READY_SECONDS_MAX
    ready = 0
    while ready < count:
        try:
            status, index, detail = ready_queue.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            raise RuntimeError(f"only {ready} of {count} load processes became ready") from None
        if status != "ready":
            raise RuntimeError(f"load process {index} failed to start:\n{detail}")
        ready += 1


def _collect(result_queue: Any, count: int, wait_seconds: float) -> list[LoadResult]:
    results: list[LoadResult] = []
    deadline = time.monotonic() + wait_seconds
    while len(results) < count:
        try:
            status, index, payload = result_queue.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            raise RuntimeError(f"only {len(results)} of {count} load processes reported") from None
        if status != "ok":
            raise RuntimeError(f"load process {index} failed:\n{payload}")
        results.append(payload)
    return results


def summarize(
    name: str,
    specs: list[LoadSpec],
    results: list[LoadResult],
    window: Mapping[str, Any],
    extra: Callable[[list[LoadResult]], Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    duration = specs[0].duration_seconds
    ok = sum(result.ok for result in results)
    errors: Counter[str] = Counter()
    for result in results:
        errors.update(result.errors)
    latencies = [latency for result in results for latency in result.latencies_seconds]
    cpu_seconds = window["cpu_seconds"]
    figures: dict[str, Any] = {
        "workload": name,
        "ops_per_second": round(ok / duration, 1),
        "ops": ok,
        **latency_fields(latencies),
        "errors": sum(errors.values()),
        "errors_by_code": dict(errors),
        "concurrency": sum(spec.callers for spec in specs),
        "load_processes": len(specs),
        "connections": sum(spec.channels for spec in specs),
        "warmup_seconds": specs[0].warmup_seconds,
        "duration_seconds": duration,
        "cpu_seconds": cpu_seconds,
        "cpu_ms_per_op": {
            process: round(seconds * 1000.0 / ok, 3) for process, seconds in cpu_seconds.items() if ok and seconds
        },
        "machine_window": window["machine_window"],
    }
    if extra is not None:
        figures.update(extra(results))
    return figures
