"""How a job ended, written by rank 0: completed (with its result document), cancelled, timed
out, given back, or failed; then the worker is idle again. Every write waits for the database
(fenced on the attempt: a rescue that happened meanwhile wins, and the video is dropped)."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from inference.daemon.active import ActiveJob
from inference.daemon.config import DaemonConfig
from inference.daemon.database import DatabaseCalls
from inference.runtime import StopFlag
from inference.video import VideoInfo
from videojobs import services
from videojobs.errors import ErrorCode

logger = logging.getLogger("inference.daemon")  # the daemon's one logger name, in every module of it


@dataclass
class JobRun:
    """What one run of a job leaves on a rank for its outcome."""

    timings: dict[str, float] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)  # what the job reused and warned of, for its status document
    video: VideoInfo | None = None  # rank 0's written video
    error: str | None = None  # why the job failed on this rank


def topology_warnings(params: dict[str, Any], topology: dict[str, Any]) -> list[str]:
    """One warning per request topology field that differs from what ran."""
    warnings = []
    for key in ("ulysses_size", "cfg_size", "dit_fsdp", "t5_fsdp", "vae_parallel"):
        if key in params and params[key] != topology[key]:
            warnings.append(
                f"requested {key}={params[key]!r}; this worker runs {key}={topology[key]!r} "
                "(topology is fixed when the daemon starts)"
            )
    return warnings


class OutcomeRecorder:
    def __init__(self, config: DaemonConfig, db: DatabaseCalls, topology: dict[str, Any]) -> None:
        self.config = config
        self.db = db
        self.topology = topology  # what this group runs, reported with every video

    def record(self, active: ActiveJob, outcome: StopFlag, run: JobRun, message: dict[str, Any],
               errors: list[str | None]) -> None:
        timings = {k: round(v, 3) for k, v in run.timings.items()}
        ids = {"job_id": active.job_id, "attempt": active.attempt}
        if outcome != StopFlag.CONTINUE and run.video is not None:
            run.video.path.unlink(missing_ok=True)  # another rank failed after rank 0 wrote it
        if outcome == StopFlag.CONTINUE:
            self._complete(ids, run, message, timings)
        elif outcome == StopFlag.CANCEL:
            self.db("cancel", lambda: services.finish_cancelled_job(**ids, timings=timings), retry=True)
        elif outcome == StopFlag.TIMEOUT:
            reason = f"the job ran longer than TASK_TIMEOUT ({self.config.task_timeout} s)"
            self.db("timeout", lambda: services.fail_job(**ids, code=ErrorCode.TIMEOUT, reason=reason, timings=timings),
                    retry=True)
        elif outcome == StopFlag.SHUTDOWN:
            self.db("release", lambda: services.release_job(**ids), retry=True)
        elif outcome == StopFlag.ERROR:
            reasons = "; ".join(f"rank {rank}: {err}" for rank, err in enumerate(errors) if err)[:2000] or "inference failed"
            self.db("failure", lambda: services.fail_job(
                **ids, code=ErrorCode.INFERENCE_ERROR, reason=reasons, timings=timings), retry=True)
        # LOST: the job already belongs to another attempt or was ended by a sweep.
        self.db("worker state", lambda: services.update_worker(name=self.config.worker_name, state="idle", job_done=True),
                retry=True)
        logger.info("job %s ended: %s %s", active.request_id, outcome.name, timings)

    def _complete(self, ids: dict[str, int], run: JobRun, message: dict[str, Any], timings: dict[str, float]) -> None:
        video, topology = run.video, self.topology
        result = {
            # The file's name in OUTPUT_DIR, never its path: the status document and the webhooks
            # name the video from it (videojobs.selectors.video_name).
            "video_file": video.path.name,
            "size_bytes": video.size_bytes,
            "duration_seconds": round(video.duration_seconds, 3),
            "frames": video.frames,
            "fps": video.fps,
            "resolution": f"{video.width}*{video.height}",
            "seed": message["seed"],
            "topology": topology,
            "acceleration": run.report["acceleration"],
            "dit_forwards": run.report["dit_forwards"],  # the DiT passes that ran (inference.pipeline.cost)
            "warnings": topology_warnings(message["params"], topology) + run.report["warnings"],
        }
        # The outcome is written even if the database is away for a while (fenced: a rescue
        # that happened meanwhile wins, and the video is dropped).
        if not self.db("completion", lambda: services.complete_job(**ids, result=result, timings=timings), retry=True):
            video.path.unlink(missing_ok=True)  # the attempt lost its lease meanwhile
