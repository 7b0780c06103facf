"""cache-dit's DBCache, the adaptive step cache, driven from our loop (``cache_method: dbcache``).

At every step after a warm-up, the first ``Fn`` blocks run; when their residual changed by less
than ``cache_threshold`` (relative L1) since this pass's last computed step, the remaining
blocks are skipped and their last residual is reused. cache-dit (Apache-2.0) does that around
``transformer.blocks``; we enable it for a dbcache job only and disable it after (about 2 ms
each way), so other jobs never run through it and its residual buffers (about 0.8 GB per pass
at 720p for the 14B model) are freed after each job.

How it fits our loop (verified on CPU ranks over gloo; see README "Acceleration"):
- it tells the conditional and unconditional passes apart by counting calls, so
  ``enable_separate_cfg`` is on exactly when this rank makes both calls per step (CFG_SIZE=1
  with guidance); a CFG-parallel rank makes one call per step and caches its own pass;
- it agrees on each decision with an all-reduce (AVG over WORLD). That couples the two CFG
  halves, whose residuals differ: we reduce over each half's own ranks instead, so each pass
  decides as one process would, except under DIT_FSDP, whose all-gathers span every rank and
  need every rank to run the same blocks (one joint decision there). The reduce is done as
  SUM / size, which HCCL also has. This replaces the ``dist`` name inside one cache-dit module.
- its state is refreshed before every job, so a cancelled job leaves nothing behind.
"""
from __future__ import annotations

import logging
import os
from typing import Any

import torch
import torch.distributed as dist

from inference.parallel.context import ParallelContext

logger = logging.getLogger(__name__)

# Sizes for Wan's 40 blocks (cache-dit's own defaults: F8 B0; its examples: 4-8 warm-up steps,
# at most 3 reused steps in a row). Fewer blocks (the tiny model) get proportionally fewer.
FN_BLOCKS, WARMUP_STEPS, MAX_CONTINUOUS = 8, 4, 3


def _decision_reduce(group: Any) -> Any:
    """A stand-in for cache-dit's ``dist`` whose AVG all-reduce is SUM / size over ``group``."""

    class _Dist:
        ReduceOp = dist.ReduceOp

        def __getattr__(self, name: str) -> Any:
            return getattr(dist, name)

        def all_reduce(self, tensor: torch.Tensor, op: Any = dist.ReduceOp.SUM, group_: Any = None, async_op: bool = False):
            if op == dist.ReduceOp.AVG:
                dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=group)
                tensor.div_(dist.get_world_size(group))
                return None
            return dist.all_reduce(tensor, op=op, group=group)

    return _Dist()


class AdaptiveCache:
    def __init__(self, transformer: torch.nn.Module, ctx: ParallelContext) -> None:
        os.environ.setdefault("CACHE_DIT_LOG_LEVEL", "error")  # its own loggers print every INFO otherwise
        import cache_dit  # noqa: F401 - fail here, at load, if it is missing
        import cache_dit.caching.cache_contexts.cache_manager as manager

        self.transformer = transformer
        self.ctx = ctx
        self.enabled = False
        self.guidance = True
        self.calls_per_step = 2
        # 1. Who decides together: each CFG half alone, or everyone (one rank: nobody to ask).
        group = None
        topology = ctx.topology
        if ctx.distributed and topology.cfg_size == 2 and not topology.dit_fsdp:
            group = ctx.meshes.grid["ring", "ulysses"]._flatten("cache_decision").get_group()
        if ctx.distributed:
            manager.dist = _decision_reduce(group)
        blocks = len(transformer.blocks)
        self.fn_blocks = min(FN_BLOCKS, max(1, blocks // 5))

    def begin(self, *, threshold: float, steps: int, guidance: bool) -> None:
        """Enable on this transformer for one job, with a fresh context."""
        import cache_dit
        from cache_dit import BlockAdapter, DBCacheConfig, ForwardPattern
        from cache_dit.attention import AttnBackendSelector

        self.guidance = guidance
        self.calls_per_step = 2 if guidance and self.ctx.topology.cfg_size == 1 else 1
        config = DBCacheConfig(
            Fn_compute_blocks=self.fn_blocks, Bn_compute_blocks=0, residual_diff_threshold=threshold,
            max_warmup_steps=min(WARMUP_STEPS, max(1, steps // 4)), warmup_interval=1, max_cached_steps=-1,
            max_continuous_cached_steps=MAX_CONTINUOUS,
            enable_separate_cfg=self.calls_per_step == 2,  # both passes here: cond first, then uncond
            cfg_compute_first=False, cfg_diff_compute_separate=True,
            num_inference_steps=None,  # its auto-refresh fires one call late; we refresh per job
        )
        # Keep our attention backend: on an NPU enable_cache would select its own otherwise.
        AttnBackendSelector._selected, AttnBackendSelector._attn_backend = True, None
        # A BlockAdapter, not the bare module: FSDP2 renames the class, which cache-dit's own
        # "Wan*" registry would no longer recognise.
        cache_dit.enable_cache(
            BlockAdapter(transformer=self.transformer, blocks=self.transformer.blocks,
                         forward_pattern=ForwardPattern.Pattern_2, has_separate_cfg=True),
            cache_config=config,
        )
        self.enabled = True

    def report(self) -> dict[str, Any]:
        """Reused denoising steps per pass on this rank (0-based step numbers)."""
        if not self.enabled:
            return {}
        context = self.transformer._context_manager.get_context(self.transformer._context_names[0])
        cached, cfg_cached = list(context.get_cached_steps()), list(context.get_cfg_cached_steps())
        if self.calls_per_step == 2:
            steps = {"cond": cached, "uncond": cfg_cached}
        else:
            steps = {self._single_pass(): cached}
        skipped = len(self.transformer.blocks) - self.fn_blocks  # blocks not run on a reused step
        return {"cached_steps": {p: len(s) for p, s in steps.items()}, "cached_step_numbers": steps,
                "fn_blocks": self.fn_blocks, "skipped_blocks": {p: len(s) * skipped for p, s in steps.items()}}

    def end(self) -> None:
        if self.enabled:
            import cache_dit

            # Under sequence parallel diffusers' hook registry made the forward a functools.partial;
            # cache-dit restores the forward it saved with __get__, which a partial lacks.
            saved = self.transformer._original_forward
            if not hasattr(saved, "__get__"):
                self.transformer._original_forward = staticmethod(saved)
            cache_dit.disable_cache(self.transformer)
            self.enabled = False

    def _single_pass(self) -> str:
        # One call per step: the conditional pass, or this CFG half's pass under guidance.
        if self.guidance and self.ctx.topology.cfg_size == 2:
            return "cond" if self.ctx.meshes.cfg_rank == 0 else "uncond"
        return "cond"
