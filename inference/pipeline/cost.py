"""What a job's denoising cost: ``dit_forwards``, the DiT forward passes that actually ran.

Counted from the calls the loop made (StepCaches.position is called before every DiT call), per
pass ("cond", "uncond"), over the whole daemon group: the ranks of a sequence-parallel group run
one pass together, so it counts once. Under CFG parallel each half runs its own pass at every
step, so the group ran both; without guidance both halves run the same conditional pass (the
second half's copy is redundant work, see README "Fast generation"), counted once. No
collective is needed (one would also add to the denoising traffic the parity tests measure).
A pass the adaptive cache (dbcache) cut short after its first blocks reused the rest of the
DiT: it is counted out. The attention cache skips self-attention inside every block but runs
every pass, so it does not change the count.

So: 20 steps with CFG -> 40; a 4-step distilled job -> 4; a dbcache job -> fewer.
"""
from __future__ import annotations

from typing import Any

from inference.parallel.context import ParallelContext


def group_calls(calls: dict[str, int], ctx: ParallelContext, *, guidance: bool) -> dict[str, int]:
    """Every pass's calls over the group, without a collective: under CFG parallel with guidance
    this rank saw only its half's pass, and the other half ran the other pass at the very same
    steps (the pair swaps its predictions at every step, inference.parallel.cfg)."""
    if ctx.topology.cfg_size == 1 or not guidance:
        return dict(calls)
    ran = sum(calls.values())  # this half's one pass, once per step
    return {"cond": ran, "uncond": ran}


def dit_forwards(calls: dict[str, int], cache_report: dict[str, Any]) -> int:
    """The group's DiT passes less those the adaptive cache cut short (cache_report: the merged one)."""
    cut_short = cache_report.get("cached_steps", {}) if cache_report.get("method") == "dbcache" else {}
    return sum(count - cut_short.get(pass_name, 0) for pass_name, count in calls.items())
