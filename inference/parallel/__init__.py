"""How one daemon group splits the pipeline across its ranks.

topology.py   switches + world size -> a checked Topology -> DeviceMeshes
context.py    what a job needs to know of the group (rank, meshes, control channel)
sequence.py   Ulysses / ring sequence parallel of the DiT (diffusers' context parallelism)
cfg.py        the conditional and unconditional passes on the two halves of the mesh
fsdp.py       FSDP2 sharding of the DiT and T5 blocks, loaded shard by shard
text_encoder.py  T5 on rank 0's CPU, its embeddings broadcast
vae.py        the VAE encode and decode split in strips across ranks
"""
