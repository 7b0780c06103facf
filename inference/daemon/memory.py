"""What each rank holds, published through the worker row (admin, /health): the bytes of its
weights per component and the quantization that runs, at start; the accelerator's peak memory
of the last job, after each job."""
from __future__ import annotations

import logging
from typing import Any

from inference.pipeline.components import WanComponents
from inference.quant.memory import job_peak, memory_document, start_peak
from inference.runtime import Runtime, gather_objects
from videojobs import services

logger = logging.getLogger("inference.daemon")  # the daemon's one logger name, in every module of it


class MemoryReport:
    """The worker row's ``memory`` document, kept by rank 0 between jobs."""

    def __init__(self, runtime: Runtime, worker_name: str, components: WanComponents) -> None:
        self.runtime = runtime
        self.worker_name = worker_name
        # Every rank takes part (same point of the start on all of them); rank 0 keeps the list.
        self.held: list[dict[str, int]] = gather_objects(runtime, dict(components.held_bytes))
        self.quantization = components.quantization
        self.peaks: list[int | None] | None = None

    def document(self) -> dict[str, Any]:
        return memory_document(self.held, self.peaks)

    def publish(self) -> None:
        """Rank 0: the row's memory and quantization (a database error is logged, never fatal)."""
        if not self.runtime.is_leader:
            return
        try:
            services.record_worker_resources(name=self.worker_name, memory=self.document(),
                                             quantization=self.quantization)
        except Exception:  # noqa: BLE001 - a report, not the job: the next one retries
            logger.exception("could not publish the worker's memory report")

    def job_started(self) -> None:
        start_peak(self.runtime.device)

    def job_finished(self) -> list[int | None] | None:
        """Every rank, after a job all ranks agreed had completed: the peaks, gathered; None on the CPU."""
        if not self.runtime.device.is_accelerator:
            return None
        self.peaks = gather_objects(self.runtime, job_peak(self.runtime.device))
        return self.peaks


def publish_weights(runtime: Runtime, worker_name: str, components: WanComponents) -> MemoryReport:
    """At start, after loading (whose log line gave each rank's weight bytes already): rank 0
    publishes every rank's."""
    report = MemoryReport(runtime, worker_name, components)
    report.publish()
    return report
