"""Per-request LoRA adapters: read from LORA_DIR, injected with diffusers + peft before sharding
and compilation, switched per job by scale tensors (no recompilation).

files.py   the adapter files: discovery, key format, rank, sha256; diffusers' conversion
inject.py  into the DiT, whole or FSDP2-sharded (meta structure, then each rank's rows)
bank.py    the adapters a daemon holds, and each job's choice of them and their scales
"""
from inference.lora.bank import LoraBank
from inference.lora.files import AdapterFile, read_adapters

__all__ = ["AdapterFile", "LoraBank", "read_adapters"]
