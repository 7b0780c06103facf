"""manage.py submit_video --image PATH_OR_URL --prompt TEXT [...] [--wait]: the API from a shell.

Thin: arguments in, `videojobs.cli.run` does the work (HTTP through `videojobs.client`).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser, DjangoHelpFormatter

from videojobs import cli
from videojobs import params as P
from videojobs.client import is_url

# option -> /video/submit field
_PARAMS = {
    "size": "image_size", "aspect": "aspect", "frames": "num_frames", "steps": "infer_steps", "seed": "seed",
    "guidance": "guidance_scale", "negative_prompt": "negative_prompt", "solver": "sample_solver",
    "shift": "sample_shift", "cache_method": "cache_method", "cache_threshold": "cache_threshold", "loras": "loras",
}


def _lora_list(text: str) -> list[dict[str, Any]]:
    """--loras "name:scale,name:scale" ("none": no adapter) as the API's list."""
    if text.strip().lower() == "none":
        return []
    try:
        return P.parse_lora_list(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _HelpFormatter(DjangoHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Keeps the exit-code table's line breaks."""


def default_server() -> str:
    """VIDEOGEN_SERVER, else this host's own service (SERVER_HOST/SERVER_PORT)."""
    if os.environ.get("VIDEOGEN_SERVER"):
        return os.environ["VIDEOGEN_SERVER"]
    host = settings.SERVER_HOST if settings.SERVER_HOST not in ("", "0.0.0.0", "::") else "127.0.0.1"
    return f"http://{f'[{host}]' if ':' in host else host}:{settings.SERVER_PORT}"


class Command(BaseCommand):
    help = ("Submit an image-to-video job; with --wait, follow it with a progress bar and download the mp4.\n"
            "Prints the requestId (or, with --wait, the saved video's path) on stdout; progress on stderr.")
    requires_system_checks: list[str] = []  # a client: no database, no model

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        return super().create_parser(prog_name, subcommand, formatter_class=_HelpFormatter,
                                     epilog=cli.EXIT_CODES_HELP, **kwargs)

    def add_arguments(self, parser: CommandParser) -> None:
        job = parser.add_argument_group("the job (see the README's parameter table for ranges)")
        job.add_argument("--image", metavar="PATH_OR_URL",
                         help="a local PNG/JPEG/WebP (uploaded) or an http(s) URL the service fetches")
        job.add_argument("--prompt", help="10-500 characters")
        job.add_argument("--negative-prompt", help="default: Wan2.1's own negative prompt")
        job.add_argument("--size", metavar="W*H", help=f"output size, e.g. 832*480 (default {P.IMAGE_SIZE_DEFAULT})")
        job.add_argument("--aspect", choices=P.ASPECT_MODES,
                         help=f"crop: exactly --size, centre-cropped (default {P.ASPECT_DEFAULT}); "
                              "auto: the whole image, its aspect ratio at --size's area")
        job.add_argument("--frames", type=int, metavar="N", help=f"4k+1, e.g. 81 (default {P.NUM_FRAMES_DEFAULT})")
        job.add_argument("--steps", type=int, metavar="N", help=f"denoising steps: {P.STEPS_MIN}-{P.STEPS_MAX} (default {P.STEPS_DEFAULT}); "
                                                                   f"with --solver distill {P.DISTILL_STEPS_MIN}-{P.DISTILL_STEPS_MAX} (default {P.DISTILL_STEPS_DEFAULT})")
        job.add_argument("--seed", type=int, help="default: random (reported in results.seed)")
        job.add_argument("--guidance", type=float, metavar="SCALE", help=f"default {P.GUIDANCE_DEFAULT} (1 with --solver distill)")
        job.add_argument("--solver", choices=P.SAMPLE_SOLVERS, help=f"default: the server's DEFAULT_SAMPLE_SOLVER ({P.SOLVER_DEFAULT} unless set); "
                                                                    f"{P.DISTILL_SOLVER}: the 4-step distilled sampler (a distilled model)")
        job.add_argument("--shift", type=float, help=f"sample shift (default: {P.SHIFT_DEFAULT_480P:g} at 480p, {P.SHIFT_DEFAULT:g} at 720p)")
        job.add_argument("--cache-method", choices=P.CACHE_METHODS, help="step cache (default none)")
        job.add_argument("--cache-threshold", type=float, help=f"dbcache threshold (default {P.CACHE_THRESHOLD_DEFAULT})")
        job.add_argument("--loras", type=_lora_list, metavar="NAME:SCALE,...",
                         help="LoRA adapters the server holds (GET /loras), e.g. distill:1,style:0.6; none for none "
                              "(default: the server's DEFAULT_LORAS)")
        job.add_argument("--idempotency-key", metavar="KEY",
                         help="resubmitting with the same key and body returns the same job (default: a fresh one)")
        follow = parser.add_argument_group("waiting")
        follow.add_argument("--wait", action="store_true", help="follow the job with a progress bar, then download")
        follow.add_argument("--follow", metavar="REQUEST_ID", help="follow an already submitted job instead (implies --wait)")
        follow.add_argument("--output", type=Path, metavar="FILE", help="where to save the video (default <requestId>.mp4)")
        follow.add_argument("--poll", type=float, default=1.0, metavar="SECONDS", help="status poll interval (default 1)")
        follow.add_argument("--cancel-on-interrupt", action="store_true",
                            help="on Ctrl-C cancel the job without asking (the only way to cancel when stdin is no terminal)")
        server = parser.add_argument_group("server")
        server.add_argument("--server", metavar="URL", help="default: $VIDEOGEN_SERVER, else http://127.0.0.1:SERVER_PORT")
        server.add_argument("--api-key", metavar="KEY", help="default: $VIDEOGEN_API_KEY")
        server.add_argument("--retries", type=int, default=8, metavar="N",
                            help="retries of a request on connection errors, 502/503/504 and 429 while polling (default 8)")

    def handle(self, *args: Any, **options: Any) -> None:
        if not options["follow"]:
            self._check_job_options(options)
        invocation = cli.Invocation(
            server=options["server"] or default_server(),
            api_key=options["api_key"] or os.environ.get("VIDEOGEN_API_KEY") or None,
            image=options["image"], prompt=options["prompt"],
            params={field: options[option] for option, field in _PARAMS.items() if options[option] is not None},
            idempotency_key=options["idempotency_key"], wait=options["wait"], follow=options["follow"],
            output=options["output"], poll=max(options["poll"], 0.0), retries=max(options["retries"], 0),
            cancel_on_interrupt=options["cancel_on_interrupt"],
        )
        # urllib3 logs each retry as a warning: it would tear the progress bar's line apart.
        logging.getLogger("urllib3").setLevel(logging.ERROR)
        code = cli.run(invocation)
        if code:
            sys.exit(code)

    @staticmethod
    def _check_job_options(options: dict[str, Any]) -> None:
        missing = [f"--{name}" for name in ("image", "prompt") if not options[name]]
        if missing:
            raise CommandError(f"{' and '.join(missing)} required (or --follow REQUEST_ID)", returncode=2)
        if not is_url(options["image"]) and not Path(options["image"]).is_file():
            raise CommandError(f"--image {options['image']!r} is neither an http(s) URL nor a file", returncode=2)
