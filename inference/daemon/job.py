"""One job on every rank: generate it, rank 0 saves the video, and all agree on how it ended.

Every rank reaches the same hooks (each phase, each denoising step, each decoding chunk) at the
same points of a job; each ends in one agreement, so a stop decided by rank 0 (cancel, timeout,
shutdown, lost lease) stops all ranks there. Rank 0 then records the outcome.
"""
from __future__ import annotations

import gc
import io
import logging
import time
from typing import Any

from PIL import Image

from inference.cache.steps import CacheRequest
from inference.daemon.active import ActiveJob
from inference.daemon.config import DaemonConfig
from inference.daemon.database import DatabaseCalls
from inference.daemon.heartbeat import start_lease_heartbeat
from inference.daemon.outcome import JobRun, OutcomeRecorder
from inference.daemon.stop import StopRequests
from inference.devices import empty_cache
from inference.generate import GenerationRequest, JobHooks, generate
from inference.parallel.context import ParallelContext
from inference.pipeline.components import WanComponents
from inference.runtime import GroupBroken, Runtime, StopFlag, agree_flag, gather_objects
from inference.video import write_mp4
from videojobs import services
from videojobs.params import ASPECT_DEFAULT, ATTENTIONCACHE_DEFAULTS, CACHE_THRESHOLD_DEFAULT, output_size

logger = logging.getLogger("inference.daemon")  # the daemon's one logger name, in every module of it


class JobStopped(Exception):
    def __init__(self, flag: StopFlag) -> None:
        super().__init__(flag.name)
        self.flag = flag


def _generation_request(message: dict[str, Any]) -> GenerationRequest:
    """The job message rank 0 broadcast, as the request every rank generates."""
    params = message["params"]
    image = Image.open(io.BytesIO(message["image_png"])).convert("RGB")
    # The video's size: image_size, or under aspect "auto" the image's ratio at its area.
    aspect = params.get("aspect", ASPECT_DEFAULT)
    width, height = output_size(image_size=params["image_size"], aspect=aspect,
                                image_width=image.width, image_height=image.height)
    return GenerationRequest(
        prompt=message["prompt"],
        negative_prompt=message["negative_prompt"] or None,
        image=image,
        width=width,
        height=height,
        aspect=aspect,
        num_frames=params["num_frames"],
        guidance_scale=params["guidance_scale"],
        infer_steps=params["infer_steps"],
        seed=message["seed"],
        sample_solver=params["sample_solver"],
        sample_shift=params["sample_shift"],
        cache=CacheRequest(
            # Jobs submitted before cache_method existed say it with use_attentioncache alone.
            method=params.get("cache_method") or ("attention" if params.get("use_attentioncache") else "none"),
            start_step=params.get("start_step", ATTENTIONCACHE_DEFAULTS["start_step"]),
            interval=params.get("attentioncache_interval", ATTENTIONCACHE_DEFAULTS["attentioncache_interval"]),
            end_step=params.get("end_step", ATTENTIONCACHE_DEFAULTS["end_step"]),
            threshold=params.get("cache_threshold", CACHE_THRESHOLD_DEFAULT),
        ),
        loras=[(item["name"], float(item["scale"])) for item in params.get("loras") or []],
    )


class StepGate:
    """Where the ranks of a job meet: rank 0 reports progress and decides whether the job goes
    on; every rank leaves with the same decision, or raises JobStopped with it."""

    def __init__(self, runtime: Runtime, stop: StopRequests, db: DatabaseCalls) -> None:
        self.runtime = runtime
        self.stop = stop
        self.db = db

    def hooks(self, active: ActiveJob) -> JobHooks:
        return JobHooks(
            phase=lambda phase: self.on_phase(active, phase),
            step=lambda step, total: self.on_step(active, step, total),
            chunk=lambda phase, done, total: self.on_chunk(active, f"{phase} chunk {done}/{total}"),
        )

    def on_phase(self, active: ActiveJob, phase: str) -> None:
        active.position = f"the start of {phase}"
        if self.runtime.is_leader:
            self.report_phase(active, phase)
        self._agree(active)

    def on_step(self, active: ActiveJob, step: int, total: int) -> None:
        active.position = f"step {step}/{total}"
        if self.runtime.is_leader:
            written = self.db("progress", lambda: services.report_progress(
                job_id=active.job_id, attempt=active.attempt, phase="denoising", step=step, total_steps=total))
            if written is False:
                active.lost.set()
        self._agree(active)

    def on_chunk(self, active: ActiveJob, position: str) -> None:
        active.position = position
        self._agree(active)

    def report_phase(self, active: ActiveJob, phase: str) -> None:
        written = self.db("progress", lambda: services.report_progress(
            job_id=active.job_id, attempt=active.attempt, phase=phase))
        if written is False:
            active.lost.set()

    def _agree(self, active: ActiveJob) -> None:
        local = self.leader_decision(active) if self.runtime.is_leader else StopFlag.CONTINUE
        flag = agree_flag(self.runtime, local)
        if flag != StopFlag.CONTINUE:
            raise JobStopped(flag)

    def leader_decision(self, active: ActiveJob) -> StopFlag:
        if self.stop.aborting or self.stop.orphaned():
            return StopFlag.SHUTDOWN
        if active.lost.is_set():
            return StopFlag.LOST
        if time.time() > active.deadline:
            return StopFlag.TIMEOUT
        # Without the database a cancel cannot be read: the job goes on, and writes its outcome later.
        if self.db("cancel check", lambda: services.is_cancel_requested(job_id=active.job_id)):
            return StopFlag.CANCEL
        return StopFlag.CONTINUE


class JobRunner:
    """Runs each job the loop receives, on every rank, with the pipeline loaded once."""

    def __init__(self, runtime: Runtime, config: DaemonConfig, ctx: ParallelContext, components: WanComponents, *,
                 gate: StepGate, db: DatabaseCalls, recorder: OutcomeRecorder, memory: Any = None) -> None:
        self.runtime = runtime
        self.config = config
        self.ctx = ctx
        self.components = components
        self.gate = gate
        self.db = db
        self.recorder = recorder
        self.memory = memory  # inference.daemon.memory.MemoryReport: the accelerator's peak per job

    def run(self, message: dict[str, Any]) -> None:
        leader = self.runtime.is_leader
        active = ActiveJob.from_message(message)
        heartbeat = start_lease_heartbeat(self.config, self.db, active) if leader else None
        run = JobRun()
        if self.memory is not None:
            self.memory.job_started()
        outcome = self._attempt(active, message, run)
        if self.memory is not None and outcome == StopFlag.CONTINUE:  # agreed: every rank gathers
            peaks = self.memory.job_finished()
            if peaks is not None:
                run.report["acceleration"]["peak_memory_bytes"] = peaks
                self.memory.publish()
        # Only after an ERROR do all ranks take part in this gather, so the counts match.
        errors = gather_objects(self.runtime, run.error) if outcome == StopFlag.ERROR else []
        if heartbeat is not None:
            heartbeat.set()
        if leader:
            self.recorder.record(active, outcome, run, message, errors)

    def _attempt(self, active: ActiveJob, message: dict[str, Any], run: JobRun) -> StopFlag:
        """Generate (rank 0 also saves the video); returns the outcome every rank agreed on."""
        result = None
        try:
            request = _generation_request(message)
            result = generate(self.components, request, ctx=self.ctx, hooks=self.gate.hooks(active))
            run.timings.update(result.timings)
            run.report = {"acceleration": result.acceleration, "warnings": result.warnings,
                          "dit_forwards": result.dit_forwards}
            if self.runtime.is_leader:
                self.gate.report_phase(active, "saving")
                started = time.perf_counter()
                run.video = write_mp4(result.frames, self.config.output_dir / f"{active.request_id}.mp4",
                                      fps=self.config.fps)
                run.timings["saving"] = time.perf_counter() - started
            return agree_flag(self.runtime, StopFlag.CONTINUE)
        except JobStopped as stopped:
            # Every rank says where it stopped: the same place on all of them, by construction.
            logger.info("rank %d stopped job %s (%s) at %s", self.runtime.rank, active.request_id, stopped.flag.name,
                        active.position)
            return stopped.flag
        except GroupBroken:
            raise
        except Exception as exc:  # noqa: BLE001 - any job error fails the job, not the daemon
            logger.exception("job %s failed on rank %d", active.request_id, self.runtime.rank)
            run.error = f"{type(exc).__name__}: {exc}"
            return agree_flag(self.runtime, StopFlag.ERROR)
        finally:
            result = None  # the frames go before the collection below
            gc.collect()
            empty_cache(self.runtime.device)
