"""The inference daemon loop: one resident pipeline, jobs claimed from Postgres, run by every rank.

Rank 0 is the only rank that talks to the database. It waits for work (LISTEN on the
ready channel, with a polling fallback), claims a job through videojobs.services,
broadcasts it on the control channel, and while every rank runs it, rank 0 writes
progress, heartbeats the lease and decides at each denoising step whether the job must
stop. That decision reaches every rank in the same collective, so all ranks stop at the
same step.
"""
from __future__ import annotations

import contextlib
import gc
import io
import logging
import os
import random
import select
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from django.conf import settings
from django.db import close_old_connections, connection
from django.db import Error as DatabaseFailure

from inference.parallel.context import ParallelContext
from inference.parallel.topology import TopologyRequest
from inference.runtime import GroupBroken, Runtime, StopFlag, agree_flag, barrier, broadcast_message, gather_objects

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_GROUP_BROKEN = 3


class JobStopped(Exception):
    def __init__(self, flag: StopFlag) -> None:
        super().__init__(flag.name)
        self.flag = flag


@dataclass
class DaemonConfig:
    worker_name: str
    ckpt_dir: Path
    tiny_model: bool
    output_dir: Path
    media_root: Path
    lease_seconds: int
    poll_seconds: float
    idle_tick_seconds: float
    task_timeout: int
    fps: int
    min_free_bytes: int = 0  # MIN_FREE_DISK_MB on OUTPUT_DIR's disk before a job runs
    max_jobs: int | None = None  # stop after this many jobs (benchmarks and tests)

    @classmethod
    def from_settings(cls, *, max_jobs: int | None = None) -> "DaemonConfig":
        tiny = not settings.MODEL_CKPT_DIR
        return cls(
            worker_name=os.environ.get("WORKER_NAME") or f"{socket.gethostname()}:{os.getpid()}",
            ckpt_dir=Path(settings.TINY_CKPT_DIR if tiny else settings.MODEL_CKPT_DIR),
            tiny_model=tiny,
            output_dir=Path(settings.OUTPUT_DIR),
            media_root=Path(settings.MEDIA_ROOT),
            lease_seconds=settings.LEASE_SECONDS,
            poll_seconds=settings.DAEMON_POLL_SECONDS,
            idle_tick_seconds=settings.DAEMON_IDLE_TICK_SECONDS,
            task_timeout=settings.TASK_TIMEOUT,
            fps=settings.VIDEO_FPS,
            min_free_bytes=settings.MIN_FREE_DISK_MB * 2**20,
            max_jobs=max_jobs,
        )


def requested_topology() -> TopologyRequest:
    return TopologyRequest.from_settings(settings)


def running_topology(ctx: ParallelContext, attention_backend: str) -> dict[str, Any]:
    """What this group actually runs, as reported in the registry, /health and every job."""
    return {**ctx.topology.as_dict(), "device": ctx.device.kind, "attention_backend": attention_backend}


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


def _watched_parents() -> list[psutil.Process]:
    """Our parent, and `make run`'s supervisor when it started us (through torchrun or not).
    is_running() compares start times, so a recycled pid does not pass for a live parent."""
    parents = []
    for pid in {os.getppid(), settings.SUPERVISOR_PID} - {0, 1}:
        with contextlib.suppress(psutil.Error):
            parents.append(psutil.Process(pid))
    return parents


@dataclass
class _ActiveJob:
    job_id: int
    attempt: int
    request_id: str
    deadline: float  # epoch seconds: started_at + TASK_TIMEOUT
    lost: threading.Event = field(default_factory=threading.Event)
    position: str = "start"  # where the job last synchronised: "step 7/30", "decoding chunk 3/21"


# The same signal again sooner than this after the first stop is that stop arriving twice.
STOP_SIGNAL_DEBOUNCE_SECONDS = 1.0


class Daemon:
    def __init__(self, runtime: Runtime, config: DaemonConfig, ctx: ParallelContext) -> None:
        self.runtime = runtime
        self.config = config
        self.ctx = ctx
        self.components = None
        self.topology: dict[str, Any] = running_topology(ctx, attention_backend="")
        self.stopping = False  # first SIGTERM/SIGINT: finish the current job, then exit
        self.aborting = False  # second signal: give the current job back now
        self.jobs_done = 0
        self._listen = None
        self._listen_retry_at = 0.0
        self._active: _ActiveJob | None = None
        self._parents = _watched_parents()

    def _orphaned(self) -> bool:
        """The supervisor (or torchrun) that started us is gone: give the job back and exit now,
        instead of holding the accelerator for a job nobody will collect."""
        return not all(parent.is_running() for parent in self._parents)

    # --- lifecycle --------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        first: list[tuple[int, float]] = []

        def handle(signum, frame):  # noqa: ARG001
            if not self.runtime.is_leader:
                return  # followers obey rank 0's broadcast, never their own signal
            if first and first[0][0] == signum and time.monotonic() - first[0][1] < STOP_SIGNAL_DEBOUNCE_SECONDS:
                # One stop delivered twice: systemd's KillMode=control-group signals every
                # process of the unit, and torchrun passes the signal it got on to the ranks.
                return
            if self.stopping:
                self.aborting = True
                logger.warning("second stop signal: giving the current job back to the queue")
            else:
                self.stopping = True
                first.append((signum, time.monotonic()))
                logger.warning("stop signal: finishing the current job, then exiting")

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    def run(self) -> int:
        from videojobs import services

        if self.runtime.is_leader:
            # Whoever ran here before and died without a word: its row turns lost, its job is rescued.
            services.retire_dead_predecessors(
                name=self.config.worker_name, host=socket.gethostname(), pid=os.getpid(), alive=psutil.pid_exists
            )
            services.register_worker(
                name=self.config.worker_name,
                host=socket.gethostname(),
                pid=os.getpid(),
                world_size=self.runtime.world_size,
                topology=self.topology,
                device=str(self.runtime.device),
                model=str(self.config.ckpt_dir) + (" (tiny random weights)" if self.config.tiny_model else ""),
            )
        try:
            # Loading a 14B model takes minutes: keep the row's heartbeat fresh meanwhile.
            with self._loading_heartbeat():
                self.load_pipeline()
            barrier(self.runtime)
            if self.runtime.is_leader:
                services.update_worker(name=self.config.worker_name, state="idle", topology=self.topology)
                self._open_listen()
                logger.info("worker %s ready on %s: %s", self.config.worker_name, self.runtime.device,
                            self.ctx.topology.describe())
            while True:
                message = self._next_message() if self.runtime.is_leader else None
                message = broadcast_message(self.runtime, message)
                if message["kind"] == "shutdown":
                    return EXIT_OK
                if message["kind"] == "job":
                    self.run_job(message)
                    self.jobs_done += 1
        except GroupBroken:
            logger.exception("the process group is broken; exiting so the supervisor restarts the daemon")
            return EXIT_GROUP_BROKEN
        finally:
            if self.runtime.is_leader:
                self._close_listen()
                try:
                    close_old_connections()
                    services.update_worker(name=self.config.worker_name, state="stopped")
                except Exception:  # noqa: BLE001 - best effort on the way out
                    logger.exception("could not mark the worker stopped")

    @contextlib.contextmanager
    def _loading_heartbeat(self):
        from videojobs import services

        if not self.runtime.is_leader:
            yield
            return
        done = threading.Event()

        def beat() -> None:
            # Every beat on its own, as _start_heartbeat's: a database outage must not end the beats.
            try:
                while not done.wait(max(self.config.idle_tick_seconds, 1.0)):
                    self._db("worker heartbeat", lambda: services.worker_heartbeat(name=self.config.worker_name))
            finally:
                connection.close()

        thread = threading.Thread(target=beat, name="loading-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join(timeout=5)

    def load_pipeline(self) -> None:
        from inference.checkpoint import parse_dtype
        from inference.pipeline.compile import parse_shape
        from inference.pipeline.loading import LoadOptions, load_components

        overrides = {name: parse_dtype(value) for name, value in settings.MODEL_DTYPES.items() if value}
        started = time.perf_counter()
        options = LoadOptions(
            ckpt_dir=self.config.ckpt_dir, device=self.runtime.device, dtypes=overrides or None,
            attention_backend=settings.ATTENTION_BACKEND, prompt_cache_size=settings.PROMPT_CACHE_SIZE,
            compile_shapes=[parse_shape(text) for text in settings.COMPILE_WARMUP] if settings.COMPILE else None,
        )
        self.components = load_components(options, self.ctx)
        self.topology = running_topology(self.ctx, self.components.attention_backend)
        logger.info("pipeline loaded from %s in %.1f s", self.config.ckpt_dir, time.perf_counter() - started)

    # --- rank 0: waiting for work -----------------------------------------------------

    def _open_listen(self) -> None:
        import psycopg

        from videojobs.services import READY_CHANNEL

        params = connection.settings_dict
        conninfo = {
            "dbname": params["NAME"],
            "user": params.get("USER") or None,
            "password": params.get("PASSWORD") or None,
            "host": params.get("HOST") or None,
            "port": params.get("PORT") or None,
        }
        conninfo.update(params.get("OPTIONS", {}) or {})
        self._listen_retry_at = time.monotonic() + 10.0
        try:
            self._listen = psycopg.connect(
                autocommit=True, connect_timeout=5, **{k: v for k, v in conninfo.items() if v}
            )
            self._listen.execute(f"LISTEN {READY_CHANNEL}")
        except Exception as exc:  # noqa: BLE001 - polling still works without LISTEN
            # Once per outage, not once per poll: the claim loop already says the database is away.
            logger.warning("LISTEN unavailable (%s); polling every %.1f s", exc, self.config.poll_seconds)
            self._listen = None

    def _close_listen(self) -> None:
        if self._listen is not None:
            with contextlib.suppress(Exception):
                self._listen.close()
            self._listen = None

    def _wait_for_notify(self, timeout: float) -> None:
        if timeout <= 0:
            return
        if self._listen is None:
            if time.monotonic() >= self._listen_retry_at:
                self._open_listen()  # the database came back: wake on NOTIFY again
            if self._listen is None:
                time.sleep(timeout)
                return
        try:
            # Wake on a NOTIFY, or after the timeout; the claim that follows is the real check.
            ready, _, _ = select.select([self._listen.fileno()], [], [], timeout)
            if ready:
                for _ in self._listen.notifies(timeout=0):
                    pass
        except Exception as exc:  # noqa: BLE001 - a restarted Postgres closes this connection
            logger.warning("LISTEN connection lost (%s); reconnecting", exc)
            self._close_listen()
            self._open_listen()

    def _next_message(self) -> dict[str, Any]:
        """Rank 0: a job, an idle tick, or shutdown; never waits past the idle tick."""
        from inference.video import output_problem
        from videojobs import services

        deadline = time.monotonic() + self.config.idle_tick_seconds
        while True:
            done = self.config.max_jobs is not None and self.jobs_done >= self.config.max_jobs
            if self.stopping or self._orphaned() or done:
                return {"kind": "shutdown"}
            close_old_connections()
            try:
                job = services.claim_next_job(worker=self.config.worker_name, lease_seconds=self.config.lease_seconds)
            except DatabaseFailure as exc:
                # Postgres restarting: keep the followers ticking and try again next tick.
                connection.close()
                logger.warning("claim failed, the database is unreachable (%s); retrying", exc)
                time.sleep(min(self.config.poll_seconds, max(deadline - time.monotonic(), 0)))
                return {"kind": "idle"}
            if job is not None:
                # A disk that cannot take the video fails the job now, not after its inference.
                problem = output_problem(self.config.output_dir, min_free_bytes=self.config.min_free_bytes)
                if problem is not None:
                    self._db("failure", lambda: services.fail_job(
                        job_id=job.pk, attempt=job.attempt, code=problem[0], reason=problem[1]), retry=True)
                    continue
                try:
                    return self._job_message(job)
                except OSError as exc:
                    reason = f"the stored input image could not be read ({type(exc).__name__}); submit the job again"
                    self._db("failure", lambda: services.fail_job(
                        job_id=job.pk, attempt=job.attempt, code="INPUT_MISSING", reason=reason), retry=True)
                    continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._db("worker heartbeat", lambda: services.worker_heartbeat(name=self.config.worker_name))
                return {"kind": "idle"}
            self._wait_for_notify(min(remaining, self.config.poll_seconds))

    def _job_message(self, job) -> dict[str, Any]:
        image_png = (self.config.media_root / job.input_image).read_bytes()
        seed = job.params.get("seed")
        if seed is None:
            # The seed that actually ran is reported, so any video can be reproduced.
            seed = random.SystemRandom().randint(0, 2**31 - 1)
        return {
            "kind": "job",
            "job_id": job.pk,
            "attempt": job.attempt,
            "request_id": job.request_id,
            "prompt": job.prompt,
            "negative_prompt": job.negative_prompt,
            "params": job.params,
            "seed": seed,
            "image_png": image_png,
            "deadline": job.started_at.timestamp() + self.config.task_timeout,
        }

    # --- every rank: one job ----------------------------------------------------------

    def run_job(self, message: dict[str, Any]) -> None:
        from inference.devices import empty_cache
        from inference.generate import JobHooks, generate
        from inference.video import write_mp4

        leader = self.runtime.is_leader
        active = _ActiveJob(
            job_id=message["job_id"], attempt=message["attempt"], request_id=message["request_id"], deadline=message["deadline"]
        )
        self._active = active
        heartbeat = self._start_heartbeat(active) if leader else None
        timings: dict[str, float] = {}
        report: dict[str, Any] = {}  # what the job reused and warned of, for its status document
        local_error: str | None = None
        video = None
        result = None
        try:
            request = _generation_request(message)
            hooks = JobHooks(
                phase=lambda phase: self._on_phase(active, phase),
                step=lambda step, total: self._on_step(active, step, total),
                chunk=lambda phase, done, total: self._on_chunk(active, f"{phase} chunk {done}/{total}"),
            )
            result = generate(self.components, request, ctx=self.ctx, hooks=hooks)
            timings.update(result.timings)
            report = {"acceleration": result.acceleration, "warnings": result.warnings}
            if leader:
                self._report_phase(active, "saving")
                started = time.perf_counter()
                video = write_mp4(result.frames, self.config.output_dir / f"{active.request_id}.mp4", fps=self.config.fps)
                timings["saving"] = time.perf_counter() - started
            outcome = agree_flag(self.runtime, StopFlag.CONTINUE)
        except JobStopped as stopped:
            outcome = stopped.flag
            # Every rank says where it stopped: the same place on all of them, by construction.
            logger.info("rank %d stopped job %s (%s) at %s", self.runtime.rank, active.request_id, outcome.name,
                        active.position)
        except GroupBroken:
            raise
        except Exception as exc:  # noqa: BLE001 - any job error fails the job, not the daemon
            logger.exception("job %s failed on rank %d", active.request_id, self.runtime.rank)
            local_error = f"{type(exc).__name__}: {exc}"
            outcome = agree_flag(self.runtime, StopFlag.ERROR)
        finally:
            result = None
            gc.collect()
            empty_cache(self.runtime.device)
        # Only after an ERROR do all ranks take part in this gather, so the counts match.
        errors = gather_objects(self.runtime, local_error) if outcome == StopFlag.ERROR else []
        if heartbeat is not None:
            heartbeat.set()
        self._active = None
        if leader:
            self._record_outcome(active, outcome, timings, video, message, errors, report)

    def _db(self, what: str, call: Any, *, retry: bool = False) -> Any:
        """One database call of rank 0. Best effort by default (progress, heartbeats: the next one
        comes soon; returns None when the database is away); with retry, until it lands (a job's
        outcome), so a Postgres restart costs the job nothing."""
        delay = 0.5
        while True:
            try:
                return call()
            except DatabaseFailure as exc:
                connection.close()  # a broken connection is replaced on the next call
                if not retry or self._orphaned() or (self.aborting and delay >= 10):
                    logger.warning("%s skipped: the database is unreachable (%s)", what, exc)
                    return None
                logger.warning("%s waits for the database (%s); retrying in %.1f s", what, exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    # Every rank reaches these hooks at the same points of a job; each ends in one agreement, so
    # a stop decided by rank 0 (cancel, timeout, shutdown, lost lease) stops all ranks there.

    def _on_phase(self, active: _ActiveJob, phase: str) -> None:
        active.position = f"the start of {phase}"
        if self.runtime.is_leader:
            self._report_phase(active, phase)
        self._agree(active)

    def _on_step(self, active: _ActiveJob, step: int, total: int) -> None:
        active.position = f"step {step}/{total}"
        if self.runtime.is_leader:
            from videojobs import services

            written = self._db("progress", lambda: services.report_progress(
                job_id=active.job_id, attempt=active.attempt, phase="denoising", step=step, total_steps=total))
            if written is False:
                active.lost.set()
        self._agree(active)

    def _on_chunk(self, active: _ActiveJob, position: str) -> None:
        active.position = position
        self._agree(active)

    def _report_phase(self, active: _ActiveJob, phase: str) -> None:
        from videojobs import services

        written = self._db("progress", lambda: services.report_progress(
            job_id=active.job_id, attempt=active.attempt, phase=phase))
        if written is False:
            active.lost.set()

    def _agree(self, active: _ActiveJob) -> None:
        local = self._leader_decision(active) if self.runtime.is_leader else StopFlag.CONTINUE
        flag = agree_flag(self.runtime, local)
        if flag != StopFlag.CONTINUE:
            raise JobStopped(flag)

    def _leader_decision(self, active: _ActiveJob) -> StopFlag:
        from videojobs import selectors

        if self.aborting or self._orphaned():
            return StopFlag.SHUTDOWN
        if active.lost.is_set():
            return StopFlag.LOST
        if time.time() > active.deadline:
            return StopFlag.TIMEOUT
        # Without the database a cancel cannot be read: the job goes on, and writes its outcome later.
        if self._db("cancel check", lambda: selectors.is_cancel_requested(job_id=active.job_id)):
            return StopFlag.CANCEL
        return StopFlag.CONTINUE

    def _start_heartbeat(self, active: _ActiveJob) -> threading.Event:
        """Rank 0 extends the lease from a thread: a single 720p step or VAE decode can outlast it."""
        from videojobs import services

        done = threading.Event()
        interval = max(self.config.lease_seconds / 3, 0.5)
        self._db("worker state", lambda: services.update_worker(
            name=self.config.worker_name, state="busy", current_job_id=active.job_id))

        def beat() -> None:
            # Every beat on its own: a database that went away for a while must not end the beats.
            try:
                while not done.wait(interval):
                    held = self._db("lease heartbeat", lambda: services.heartbeat(
                        job_id=active.job_id, attempt=active.attempt, lease_seconds=self.config.lease_seconds))
                    if held is False:
                        active.lost.set()
                    self._db("worker heartbeat", lambda: services.worker_heartbeat(name=self.config.worker_name))
            finally:
                connection.close()

        threading.Thread(target=beat, name=f"heartbeat-{active.request_id}", daemon=True).start()
        return done

    def _record_outcome(self, active, outcome: StopFlag, timings, video, message, errors, report) -> None:
        from videojobs import services

        timings = {k: round(v, 3) for k, v in timings.items()}
        ids = {"job_id": active.job_id, "attempt": active.attempt}
        if outcome != StopFlag.CONTINUE and video is not None:
            video.path.unlink(missing_ok=True)  # another rank failed after rank 0 wrote it
        if outcome == StopFlag.CONTINUE:
            topology = self.topology
            result = {
                "video_path": _display_path(video.path),
                "video_file": video.path.name,
                "size_bytes": video.size_bytes,
                "duration_seconds": round(video.duration_seconds, 3),
                "frames": video.frames,
                "fps": video.fps,
                "resolution": f"{video.width}*{video.height}",
                "seed": message["seed"],
                "topology": topology,
                "acceleration": report["acceleration"],
                "warnings": topology_warnings(message["params"], topology) + report["warnings"],
            }
            # The outcome is written even if the database is away for a while (fenced: a rescue
            # that happened meanwhile wins, and the video is dropped).
            if not self._db("completion", lambda: services.complete_job(**ids, result=result, timings=timings), retry=True):
                video.path.unlink(missing_ok=True)  # the attempt lost its lease meanwhile
        elif outcome == StopFlag.CANCEL:
            self._db("cancel", lambda: services.finish_cancelled_job(**ids, timings=timings), retry=True)
        elif outcome == StopFlag.TIMEOUT:
            reason = f"the job ran longer than TASK_TIMEOUT ({self.config.task_timeout} s)"
            self._db("timeout", lambda: services.fail_job(**ids, code="TIMEOUT", reason=reason, timings=timings), retry=True)
        elif outcome == StopFlag.SHUTDOWN:
            self._db("release", lambda: services.release_job(**ids), retry=True)
        elif outcome == StopFlag.ERROR:
            reasons = "; ".join(f"rank {rank}: {err}" for rank, err in enumerate(errors) if err)[:2000] or "inference failed"
            self._db("failure", lambda: services.fail_job(**ids, code="INFERENCE_ERROR", reason=reasons, timings=timings),
                     retry=True)
        # LOST: the job already belongs to another attempt or was ended by a sweep.
        self._db("worker state", lambda: services.update_worker(name=self.config.worker_name, state="idle", job_done=True),
                 retry=True)
        logger.info("job %s ended: %s %s", active.request_id, outcome.name, timings)


def _check_output_at_start(config: DaemonConfig) -> None:
    """Refuse to start without a writable output folder (one line, its path: this is the operator's
    log, not a client's); a full disk only warns, since space may be freed before the next job."""
    from inference.video import output_problem

    problem = output_problem(config.output_dir, min_free_bytes=config.min_free_bytes)
    if problem is not None and problem[0] == "OUTPUT_UNWRITABLE":
        raise ValueError(f"OUTPUT_DIR {config.output_dir} is not writable: {problem[1]}")
    if problem is not None:
        logger.warning("OUTPUT_DIR %s: %s", config.output_dir, problem[1])


def _generation_request(message: dict[str, Any]) -> Any:
    """The job message rank 0 broadcast, as the request every rank generates."""
    from PIL import Image

    from inference.cache.steps import CacheRequest
    from inference.generate import GenerationRequest
    from videojobs.params import ATTENTIONCACHE_DEFAULTS, CACHE_THRESHOLD_DEFAULT, parse_image_size

    params = message["params"]
    width, height = parse_image_size(params["image_size"])
    return GenerationRequest(
        prompt=message["prompt"],
        negative_prompt=message["negative_prompt"] or None,
        image=Image.open(io.BytesIO(message["image_png"])).convert("RGB"),
        width=width,
        height=height,
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
    )


def _display_path(path: Path) -> str:
    try:
        return str(path.relative_to(settings.BASE_DIR))
    except ValueError:
        return str(path)


def main(*, max_jobs: int | None = None) -> int:
    """Check the topology, start the runtime, make sure the checkpoint is there, and serve jobs."""
    from inference.checkpoint import transformer_config, validate_checkpoint_dir
    from inference.parallel.topology import build_meshes, resolve_topology
    from inference.runtime import init_runtime, shutdown_runtime

    # 1. The switches must fit the group before any device is touched.
    request = requested_topology()
    resolve_topology(request, world_size=int(os.environ.get("WORLD_SIZE", "1")))
    config = DaemonConfig.from_settings(max_jobs=max_jobs)
    # 2. Ranks, devices, the two process groups.
    runtime = init_runtime(device=settings.DEVICE, timeout_seconds=settings.DIST_TIMEOUT_SECONDS)
    try:
        # 3. The development default: a tiny random-weight model, built once by rank 0.
        if config.tiny_model and runtime.is_leader and not (config.ckpt_dir / "model_index.json").exists():
            from inference.tiny import create_tiny_checkpoint

            logger.warning(
                "MODEL_CKPT_DIR is unset: building the tiny random-weight model in %s (it produces noise, not video)",
                config.ckpt_dir,
            )
            create_tiny_checkpoint(config.ckpt_dir)
        barrier(runtime)
        # 4. One readable line for a missing or incomplete checkpoint, on every rank.
        validate_checkpoint_dir(config.ckpt_dir)
        _check_output_at_start(config)
        # 5. The model's head count and the device complete the topology check; then the meshes.
        heads = int(transformer_config(config.ckpt_dir)["num_attention_heads"])
        topology, notes = resolve_topology(
            request, world_size=runtime.world_size, num_heads=heads, device_kind=runtime.device.kind
        )
        for note in notes:
            logger.warning(note)
        ctx = ParallelContext(
            topology=topology, rank=runtime.rank, device=runtime.device,
            meshes=build_meshes(topology, runtime.device.kind), control_group=runtime.control_group,
        )
        daemon = Daemon(runtime, config, ctx)
        daemon.install_signal_handlers()
        return daemon.run()
    finally:
        if runtime.is_leader:
            close_old_connections()
        shutdown_runtime(runtime)
