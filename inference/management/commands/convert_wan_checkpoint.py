"""manage.py convert_wan_checkpoint SRC DST

Converts a checkpoint in the original Wan2.1 layout (what the original product's MODEL_CKPT_DIR
points at) into the diffusers layout this service loads; see inference/convert.py.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = "Convert an original-layout Wan2.1 I2V checkpoint (SRC) into the diffusers layout (DST, created)."
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("src", type=Path, help="the original Wan2.1-I2V-14B-720P folder")
        parser.add_argument("dst", type=Path, help="the diffusers-layout folder to create; set MODEL_CKPT_DIR to it")

    def handle(self, *args: Any, **options: Any) -> None:
        from inference.convert import convert_checkpoint  # lazy: keeps torch out of `manage.py help`

        try:
            path = convert_checkpoint(options["src"].expanduser(), options["dst"].expanduser(),
                                      progress=lambda line: self.stderr.write(line))
        except (ValueError, FileExistsError, FileNotFoundError) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(str(path))
