"""`manage.py run_inference_daemon`: check the topology, start the runtime, make sure the
checkpoint is there, load the pipeline once, serve jobs until told to stop, and shut down."""
from __future__ import annotations

import logging
import os
import socket
import time

import psutil
from django.conf import settings
from django.db import close_old_connections

from inference.checkpoint import CheckpointError, parse_dtype, transformer_config, validate_checkpoint_dir
from inference.daemon.config import DaemonConfig, requested_topology, running_topology
from inference.daemon.database import DatabaseCalls
from inference.daemon.heartbeat import loading_heartbeat
from inference.daemon.job import JobRunner, StepGate
from inference.daemon.listen import ReadyListener
from inference.daemon.loop import JobLoop
from inference.daemon.memory import publish_weights
from inference.daemon.outcome import OutcomeRecorder
from inference.daemon.stop import StopRequests
from inference.parallel.context import ParallelContext
from inference.parallel.topology import TopologyRequest, build_meshes, resolve_topology
from inference.pipeline.compile import parse_shape
from inference.pipeline.loading import LoadOptions, load_components
from inference.runtime import GroupBroken, Runtime, barrier, init_runtime, shutdown_runtime
from inference.tiny import create_tiny_checkpoint
from inference.video import output_problem
from videojobs import services
from videojobs.errors import ErrorCode

logger = logging.getLogger("inference.daemon")  # the daemon's one logger name, in every module of it

EXIT_OK = 0
EXIT_GROUP_BROKEN = 3
# What stops the daemon before it serves: one line for the operator, no traceback.
STARTUP_ERRORS = (CheckpointError, ValueError)


class Daemon:
    """One daemon group's rank: its collaborators, and its life from loading to the last job."""

    def __init__(self, runtime: Runtime, config: DaemonConfig, ctx: ParallelContext) -> None:
        self.runtime = runtime
        self.config = config
        self.ctx = ctx
        self.components = None
        self.memory = None  # inference.daemon.memory.MemoryReport, once loaded
        self.topology = running_topology(ctx, attention_backend="")
        self.stop = StopRequests(is_leader=runtime.is_leader)
        self.db = DatabaseCalls(self.stop)
        self.gate = StepGate(runtime, self.stop, self.db)
        self.listener = ReadyListener(poll_seconds=config.poll_seconds)

    def run(self) -> int:
        if self.runtime.is_leader:
            self._register()
        try:
            with loading_heartbeat(self.config, self.db, is_leader=self.runtime.is_leader):
                self.load_pipeline()
            barrier(self.runtime)
            if self.runtime.is_leader:
                services.update_worker(name=self.config.worker_name, state="idle", topology=self.topology,
                                       loras=self._held_loras())
                self.listener.open()
                logger.info("worker %s ready on %s: %s", self.config.worker_name, self.runtime.device,
                            self.ctx.topology.describe())
            self._job_loop().run()
            return EXIT_OK
        except GroupBroken:
            logger.exception("the process group is broken; exiting so the supervisor restarts the daemon")
            return EXIT_GROUP_BROKEN
        finally:
            if self.runtime.is_leader:
                self._sign_off()

    def load_pipeline(self) -> None:
        overrides = {name: parse_dtype(value) for name, value in settings.MODEL_DTYPES.items() if value}
        started = time.perf_counter()
        options = LoadOptions(
            ckpt_dir=self.config.ckpt_dir, device=self.runtime.device, dtypes=overrides or None,
            attention_backend=settings.ATTENTION_BACKEND, prompt_cache_size=settings.PROMPT_CACHE_SIZE,
            compile_shapes=[parse_shape(text) for text in settings.COMPILE_WARMUP] if settings.COMPILE else None,
            dit_quant=settings.DIT_QUANT, t5_quant=settings.T5_QUANT,
            lora_dir=settings.LORA_DIR,
        )
        self.components = load_components(options, self.ctx)
        self.topology = running_topology(self.ctx, self.components.attention_backend)
        self.memory = publish_weights(self.runtime, self.config.worker_name, self.components)
        logger.info("pipeline loaded from %s in %.1f s", self.config.ckpt_dir, time.perf_counter() - started)

    def _held_loras(self) -> list[dict]:
        """The adapters this group holds (each with the bytes it costs a rank), for the worker row."""
        bank = getattr(self.components, "loras", None)
        if bank is None:
            return []
        held = bank.describe()
        for entry in held:
            logger.info("LoRA %s (%s, rank %d): %d bytes on each rank", entry["name"], entry["format"], entry["rank"],
                        entry["memory_bytes"])
        return held

    def _register(self) -> None:
        """Rank 0, before loading: this worker's row in the registry."""
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

    def _job_loop(self) -> JobLoop:
        """Once the pipeline is loaded: the loop, and the runner it hands each job to."""
        recorder = OutcomeRecorder(self.config, self.db, self.topology)
        runner = JobRunner(self.runtime, self.config, self.ctx, self.components, gate=self.gate, db=self.db,
                           recorder=recorder, memory=self.memory)
        return JobLoop(self.runtime, self.config, stop=self.stop, db=self.db, listener=self.listener, runner=runner)

    def _sign_off(self) -> None:
        """Rank 0, on the way out, whatever happened: the worker's row says stopped."""
        self.listener.close()
        try:
            close_old_connections()
            services.update_worker(name=self.config.worker_name, state="stopped")
        except Exception:  # noqa: BLE001 - best effort on the way out
            logger.exception("could not mark the worker stopped")


def _check_output_at_start(config: DaemonConfig) -> None:
    """Refuse to start without a writable output folder (one line, its path: this is the operator's
    log, not a client's); a full disk only warns, since space may be freed before the next job."""
    problem = output_problem(config.output_dir, min_free_bytes=config.min_free_bytes)
    if problem is not None and problem[0] == ErrorCode.OUTPUT_UNWRITABLE:
        raise ValueError(f"OUTPUT_DIR {config.output_dir} is not writable: {problem[1]}")
    if problem is not None:
        logger.warning("OUTPUT_DIR %s: %s", config.output_dir, problem[1])


def _prepare_checkpoint(config: DaemonConfig, runtime: Runtime) -> None:
    """The checkpoint (and the output folder) every rank needs, checked on every rank."""
    # The development default: a tiny random-weight model, built once by rank 0.
    if config.tiny_model and runtime.is_leader and not (config.ckpt_dir / "model_index.json").exists():
        logger.warning(
            "MODEL_CKPT_DIR is unset: building the tiny random-weight model in %s (it produces noise, not video)",
            config.ckpt_dir,
        )
        create_tiny_checkpoint(config.ckpt_dir)
    barrier(runtime)
    # One readable line for a missing or incomplete checkpoint, on every rank.
    validate_checkpoint_dir(config.ckpt_dir)
    _check_output_at_start(config)


def _parallel_context(request: TopologyRequest, config: DaemonConfig, runtime: Runtime) -> ParallelContext:
    """The model's head count and the device complete the topology check; then the meshes."""
    heads = int(transformer_config(config.ckpt_dir)["num_attention_heads"])
    topology, notes = resolve_topology(
        request, world_size=runtime.world_size, num_heads=heads, device_kind=runtime.device.kind
    )
    for note in notes:
        logger.warning(note)
    return ParallelContext(
        topology=topology, rank=runtime.rank, device=runtime.device,
        meshes=build_meshes(topology, runtime.device.kind), control_group=runtime.control_group,
    )


def main(*, max_jobs: int | None = None) -> int:
    """Check the topology, start the runtime, make sure the checkpoint is there, and serve jobs."""
    # 1. The switches must fit the group before any device is touched.
    request = requested_topology()
    resolve_topology(request, world_size=int(os.environ.get("WORLD_SIZE", "1")))
    config = DaemonConfig.from_settings(max_jobs=max_jobs)
    # 2. Ranks, devices, the two process groups.
    runtime = init_runtime(device=settings.DEVICE, timeout_seconds=settings.DIST_TIMEOUT_SECONDS)
    try:
        # 3. The tiny model when no checkpoint is configured; 4. the checkpoint and output checks.
        _prepare_checkpoint(config, runtime)
        # 5. The topology against the model and the device, then the meshes.
        daemon = Daemon(runtime, config, _parallel_context(request, config, runtime))
        daemon.stop.install_signal_handlers()
        return daemon.run()
    finally:
        if runtime.is_leader:
            close_old_connections()
        shutdown_runtime(runtime)
