"""inference.parallel.topology: the switches checked against the group and the model."""
from __future__ import annotations

import pytest

from inference.parallel.topology import (
    TopologyError,
    TopologyRequest,
    resolve_topology,
    sequence_split_error,
    valid_layouts,
)


def resolve(world: int, heads: int | None = 40, device: str | None = "cuda", **switches):
    return resolve_topology(TopologyRequest(**switches), world_size=world, num_heads=heads, device_kind=device)


def test_the_originals_eight_card_default_is_ulysses_eight():
    topology, notes = resolve(8, ulysses_size=8, dit_fsdp=True, vae_parallel=True)
    assert (topology.ulysses_size, topology.ring_size, topology.cfg_size) == (8, 1, 1)
    assert topology.dit_fsdp and topology.vae_parallel and notes == []


@pytest.mark.parametrize(
    ("switches", "expected"),
    [({}, (8, 1, 1)), ({"cfg_size": 2}, (4, 1, 2)), ({"ring_size": 2}, (4, 2, 1)), ({"ring_size": 2, "cfg_size": 2}, (2, 2, 2))],
)
def test_unset_ulysses_takes_what_ring_and_cfg_leave(switches, expected):
    topology, _ = resolve(8, **switches)
    assert (topology.ulysses_size, topology.ring_size, topology.cfg_size) == expected
    assert topology.sequence_size == expected[0] * expected[1]
    assert topology.mesh_shape == (expected[2], expected[1], expected[0])


def test_sizes_that_do_not_multiply_to_the_world_are_refused_with_what_would_work():
    with pytest.raises(TopologyError) as caught:
        resolve(4, ulysses_size=8)
    message = str(caught.value)
    assert "ULYSSES_SIZE x RING_SIZE x CFG_SIZE = 8 x 1 x 1 = 8" in message and "WORLD_SIZE=4" in message
    assert "ULYSSES_SIZE=4 RING_SIZE=1 CFG_SIZE=1" in message and "\n" not in message


def test_a_world_that_ring_and_cfg_do_not_divide_is_refused():
    with pytest.raises(TopologyError, match=r"WORLD_SIZE=3 does not divide by RING_SIZE x CFG_SIZE = 1 x 2"):
        resolve(3, cfg_size=2)


def test_cfg_size_other_than_one_or_two_is_refused():
    with pytest.raises(TopologyError, match=r"CFG_SIZE must be 1 or 2, got 4"):
        resolve(8, cfg_size=4)


def test_ulysses_must_divide_the_heads():
    with pytest.raises(TopologyError) as caught:
        resolve(16, heads=40, ulysses_size=16)
    assert "ULYSSES_SIZE=16 does not divide the DiT's 40 attention heads" in str(caught.value)
    assert "[1, 2, 4, 5, 8, 10]" in str(caught.value)


def test_t5_cpu_and_t5_fsdp_exclude_each_other():
    with pytest.raises(TopologyError, match=r"T5_CPU=true and T5_FSDP=true exclude each other"):
        resolve(8, t5_cpu=True, t5_fsdp=True)


def test_ring_is_refused_on_npus_with_the_ulysses_alternative():
    with pytest.raises(TopologyError, match=r"RING_SIZE=2 is not available on Ascend NPUs.*ULYSSES_SIZE=8 RING_SIZE=1"):
        resolve(8, device="npu", ring_size=2)
    topology, _ = resolve(8, device="npu", ulysses_size=8)
    assert topology.ulysses_size == 8


def test_sharding_switches_on_one_rank_run_and_report_unsharded():
    topology, notes = resolve(1, dit_fsdp=True, t5_fsdp=True, vae_parallel=True)
    assert not (topology.dit_fsdp or topology.t5_fsdp or topology.vae_parallel)
    assert len(notes) == 3 and all("nothing to split over on one rank" in n for n in notes)
    placed, _ = resolve(1, t5_cpu=True)
    assert placed.t5_cpu is True  # T5 on the host is a placement, not a split


def test_topology_is_reported_as_a_plain_dict():
    topology, _ = resolve(4, ulysses_size=2, cfg_size=2, dit_fsdp=True)
    assert topology.as_dict() == {
        "world_size": 4, "ulysses_size": 2, "ring_size": 1, "cfg_size": 2,
        "dit_fsdp": True, "t5_fsdp": False, "t5_cpu": False, "vae_parallel": False,
    }
    assert topology.describe() == "4 rank(s), ulysses 2, ring 1, cfg 2, dit_fsdp"


def test_valid_layouts_respect_the_heads():
    assert valid_layouts(4, num_heads=2) == [
        "ULYSSES_SIZE=2 RING_SIZE=2 CFG_SIZE=1", "ULYSSES_SIZE=1 RING_SIZE=4 CFG_SIZE=1",
        "ULYSSES_SIZE=2 RING_SIZE=1 CFG_SIZE=2", "ULYSSES_SIZE=1 RING_SIZE=2 CFG_SIZE=2",
    ]


def test_a_sequence_that_does_not_split_evenly_is_explained():
    topology, _ = resolve(8)
    assert sequence_split_error(topology, tokens=32760) is None  # 480p, 81 frames
    assert "10921 tokens" in sequence_split_error(topology, tokens=10921)


def test_the_module_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, inference.parallel.topology; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
