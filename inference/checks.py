"""The inference daemon's system checks, run by `manage.py check` in every process (the web's
too): they read only the torch-free topology vocabulary, so the web app never depends on
inference to explain a bad combination of switches.

The id stays videojobs.W004, as operators know it (and may have silenced it) from before the
check moved here.
"""
from __future__ import annotations

import os

from django.conf import settings
from django.core.checks import Error, Warning, register

from inference.parallel.topology import TopologyError, TopologyRequest, resolve_topology
from inference.quant.modes import QuantizationError, check_combination


@register()
def check_topology(app_configs=None, **kwargs):
    # A warning: only the daemon runs the topology, and it refuses a bad one at start with the
    # same sentence. Here the world size is torchrun's, or what the supervisor would start.
    world = int(os.environ.get("WORLD_SIZE") or settings.INFERENCE_NPROC * settings.INFERENCE_NNODES)
    try:
        resolve_topology(TopologyRequest.from_settings(settings), world_size=world)
    except TopologyError as error:
        return [Warning(str(error), hint="The inference daemon will refuse to start with these switches.",
                        id="videojobs.W004")]
    return []


@register()
def check_quantization(app_configs=None, **kwargs):
    # An error: DIT_QUANT / T5_QUANT with FSDP of the same model can never start (the device
    # requirement of fp8 is checked by the daemon, which knows its GPU).
    try:
        check_combination(dit_quant=settings.DIT_QUANT, t5_quant=settings.T5_QUANT,
                          dit_fsdp=settings.DIT_FSDP, t5_fsdp=settings.T5_FSDP)
    except QuantizationError as error:
        return [Error(str(error), hint="The inference daemon will refuse to start with these switches.",
                      id="inference.E001")]
    return []
