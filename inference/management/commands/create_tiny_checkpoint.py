"""manage.py create_tiny_checkpoint DIR [--seed N] [--force]

Writes the tiny random-weight Wan2.1 I2V checkpoint (see inference/tiny.py) for development
and tests; point MODEL_CKPT_DIR at DIR to use it.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = "Write a tiny random-weight Wan2.1 I2V checkpoint (diffusers layout) to DIR."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("dir", type=Path, help="output folder; must not exist or be empty unless --force")
        parser.add_argument("--seed", type=int, default=0, help="seed for the random weights (default 0)")
        parser.add_argument("--force", action="store_true", help="replace DIR if it already exists")

    def handle(self, *args: Any, **options: Any) -> None:
        from inference.tiny import create_tiny_checkpoint  # lazy: keeps torch out of `manage.py help`

        out_dir: Path = options["dir"].expanduser().resolve()
        if out_dir.exists() and options["force"]:
            if not out_dir.is_dir():
                raise CommandError(f"{out_dir} exists and is not a folder")
            # A mistyped DIR must not wipe an unrelated folder: only a checkpoint is replaced.
            if any(out_dir.iterdir()) and not (out_dir / "model_index.json").is_file():
                raise CommandError(f"refusing to replace {out_dir}: it is not a checkpoint (no model_index.json)")
            shutil.rmtree(out_dir)
        try:
            path = create_tiny_checkpoint(out_dir, seed=options["seed"])
        except FileExistsError as exc:
            raise CommandError(f"{exc}; pass --force to replace it") from None
        self.stdout.write(str(path))
