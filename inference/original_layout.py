"""The original Wan2.1 checkpoint layout: its file names, and how to tell such a folder.

``inference.checkpoint`` reads it to tell an operator that MODEL_CKPT_DIR needs converting;
``inference.convert`` reads it to convert one. Pure Python: no weight is ever read here.
"""
from __future__ import annotations

from pathlib import Path

T5_FILE = "models_t5_umt5-xxl-enc-bf16.pth"
CLIP_FILE = "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"
VAE_FILE = "Wan2.1_VAE.pth"
TOKENIZER_DIR = "google/umt5-xxl"
ORIGINAL_FILES: tuple[str, ...] = (T5_FILE, CLIP_FILE, VAE_FILE, "config.json")
DIT_STEM = "diffusion_pytorch_model"


def is_original_layout(folder: Path) -> bool:
    """True for a folder in the original Wan2.1 layout (and not the diffusers one)."""
    folder = Path(folder)
    return (folder / VAE_FILE).is_file() or (folder / T5_FILE).is_file()


def missing_original_files(folder: Path) -> list[str]:
    missing = [name for name in ORIGINAL_FILES if not (folder / name).is_file()]
    if not list(folder.glob(f"{DIT_STEM}*.safetensors")):
        missing.append(f"{DIT_STEM}*.safetensors")
    if not (folder / TOKENIZER_DIR).is_dir():
        missing.append(f"{TOKENIZER_DIR}/")
    return missing
