"""How one daemon group splits the pipeline across its ranks.

topology.py   switches + world size -> a checked Topology -> DeviceMeshes
context.py    what a job needs to know of the group (rank, meshes, control channel), and the
              broadcast of rank 0's tensors (T5 on the CPU: ``pipeline/encode.py`` encodes on
              rank 0, this sends the embeddings to every rank)
sequence.py   Ulysses / ring sequence parallel of the DiT (diffusers' context parallelism)
cfg.py        the conditional and unconditional passes on the two halves of the mesh
fsdp.py       FSDP2 sharding of the DiT and T5 blocks, loaded shard by shard
vae.py        the VAE encode and decode split in strips across ranks
traffic.py    the bytes a rank sends per step and phase: measured, and modelled

A topology is tried without the service by ``torchrun -m inference.trial`` (inference/trial.py).
"""
