"""What `manage.py submit_video` does: submit, follow with a progress bar, download, exit codes.

The HTTP side is `videojobs.client`; this module is the terminal side (tqdm on stderr, the
Ctrl-C question on stdin, the request id or the video's path on stdout for scripts).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from videojobs.client import ApiError, ClientError, ServerUnreachable, VideoGenClient

EXIT_OK = 0
EXIT_FAILED = 3
EXIT_CANCELLED = 4
EXIT_REFUSED = 5
EXIT_UNAVAILABLE = 6
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = f"""exit codes:
  {EXIT_OK}    submitted (without --wait), or the job succeeded and its video was saved
  1    unexpected error
  2    bad command line (a missing --image/--prompt, an image file that does not exist)
  {EXIT_FAILED}    the job failed (its reason and error_code are printed)
  {EXIT_CANCELLED}    the job was cancelled (by someone else, or by an operator)
  {EXIT_REFUSED}    the service refused a request (400 validation, 401 key, 404, 409, 429, 410 video gone)
  {EXIT_UNAVAILABLE}    the service did not answer, or kept answering 502/503/504, through every retry
  {EXIT_INTERRUPTED}  Ctrl-C while waiting (the job goes on unless you chose to cancel it)
"""

_BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {elapsed}{postfix}"


@dataclass
class Invocation:
    server: str
    api_key: str | None = None
    image: str | None = None
    prompt: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    idempotency_key: str | None = None
    wait: bool = False
    follow: str | None = None
    output: Path | None = None
    poll: float = 1.0
    retries: int = 8
    cancel_on_interrupt: bool = False


@dataclass
class Terminal:
    stdin: TextIO
    stdout: TextIO
    stderr: TextIO

    @classmethod
    def system(cls) -> Terminal:
        return cls(sys.stdin, sys.stdout, sys.stderr)

    def out(self, line: str) -> None:
        self.stdout.write(line + "\n")
        self.stdout.flush()

    def err(self, line: str) -> None:
        self.stderr.write(line + "\n")
        self.stderr.flush()


def describe(document: dict[str, Any]) -> str:
    """The bar's label: where the job is, in words."""
    status = document.get("status")
    if status == "InQueue":
        position = document.get("queue_position")
        label = f"queued, position {position}" if position else "queued"
    elif status == "InProgress":
        phase = document.get("phase") or "running"
        total = document.get("total_steps")
        label = f"{phase} step {document.get('step') or 0}/{total}" if phase == "denoising" and total else phase
    else:
        label = str(status)
    cancelling = document.get("cancel_requested") and status in ("InQueue", "InProgress")
    return label + (" (cancelling)" if cancelling else "")


class JobProgress:
    """One tqdm line on stderr driven by status documents: percent from `progress`, the label
    from describe(), the server's ETA (tqdm's own rate is meaningless for a polled job)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._bar: tqdm | None = None  # made with the first document: no empty bar before it
        self._shown: tuple | None = None

    def update(self, document: dict[str, Any]) -> None:
        eta = document.get("eta_seconds")
        shown = (describe(document), f"ETA {tqdm.format_interval(eta)}" if eta is not None else "",
                 round(100 * float(document.get("progress") or 0), 1))
        if self._bar is None:
            self._bar = tqdm(total=100, initial=shown[2], desc=shown[0], postfix=shown[1] or None, file=self._stream,
                             bar_format=_BAR_FORMAT, leave=True, mininterval=0)
        elif shown == self._shown and not self._stream.isatty():
            return  # a file or pipe gets a redraw per change; a terminal's clock keeps ticking
        else:
            self._bar.set_description_str(shown[0], refresh=False)
            self._bar.set_postfix_str(shown[1], refresh=False)
            self._bar.n = shown[2]
            self._bar.refresh()
        self._shown = shown

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def run(invocation: Invocation, *, client: VideoGenClient | None = None, terminal: Terminal | None = None) -> int:
    """The whole command; returns its exit code."""
    terminal = terminal or Terminal.system()
    client = client or VideoGenClient(invocation.server, api_key=invocation.api_key, retries=invocation.retries)
    try:
        return _submit_and_follow(invocation, client, terminal)
    except ApiError as error:
        terminal.err(f"error: {error}{_field_lines(error)}")
        return EXIT_UNAVAILABLE if error.status >= 500 else EXIT_REFUSED
    except ServerUnreachable as error:
        terminal.err(f"error: {error}")
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        terminal.err("\ninterrupted")
        return EXIT_INTERRUPTED


def _field_lines(error: ApiError) -> str:
    lines = [f"\n  {name}: {'; '.join(map(str, msgs)) if isinstance(msgs, list) else msgs}"
             for name, msgs in error.fields.items()]
    return "".join(lines)


def _submit_and_follow(invocation: Invocation, client: VideoGenClient, terminal: Terminal) -> int:
    request_id = invocation.follow or client.submit(
        image=invocation.image, prompt=invocation.prompt, params=invocation.params,
        idempotency_key=invocation.idempotency_key,
    )
    if not (invocation.wait or invocation.follow):
        terminal.out(request_id)
        return EXIT_OK
    terminal.err(f"job {request_id} on {client.server}")
    progress = JobProgress(terminal.stderr)
    try:
        document = client.wait(request_id, poll=invocation.poll, on_update=progress.update)
    except KeyboardInterrupt:
        progress.close()
        return _interrupted(request_id, invocation, client, terminal)
    progress.close()
    return _finish(document, invocation.output or Path(f"{request_id}.mp4"), client, terminal)


def _finish(document: dict[str, Any], output: Path, client: VideoGenClient, terminal: Terminal) -> int:
    request_id, status = document["requestId"], document["status"]
    if status == "Succeed":
        terminal.out(str(client.download(request_id, output)))
        return EXIT_OK
    reason = document.get("reason") or "no reason given"
    code = f" [{document['error_code']}]" if document.get("error_code") else ""
    if status == "Failed":
        terminal.err(f"job {request_id} failed{code}: {reason}")
        return EXIT_FAILED
    terminal.err(f"job {request_id} was cancelled{code}: {reason}")
    return EXIT_CANCELLED


def _interrupted(request_id: str, invocation: Invocation, client: VideoGenClient, terminal: Terminal) -> int:
    if not _wants_cancel(request_id, invocation.cancel_on_interrupt, terminal):
        terminal.err(f"stopped waiting; job {request_id} goes on. Follow it again with:\n"
                      f"  manage.py submit_video --follow {request_id} --server {client.server}")
        return EXIT_INTERRUPTED
    try:
        answer = client.cancel(request_id)
        terminal.err(f"{answer.get('message', 'cancel requested')}; waiting for the job to end (Ctrl-C to stop waiting)")
    except ApiError as error:
        if error.status != 409:  # 409: it had already ended, nothing to cancel
            raise
    try:
        document = client.wait(request_id, poll=invocation.poll)
    except (KeyboardInterrupt, ClientError):
        terminal.err(f"stopped waiting; the cancel of job {request_id} stands")
        return EXIT_INTERRUPTED
    reason = f": {document['reason']}" if document.get("reason") else ""
    terminal.err(f"job {request_id} ended {document['status']}{reason}")
    return EXIT_INTERRUPTED


def _wants_cancel(request_id: str, cancel_on_interrupt: bool, terminal: Terminal) -> bool:
    # Without a terminal nobody can answer: cancelling then needs --cancel-on-interrupt.
    if cancel_on_interrupt:
        return True
    if terminal.stdin is None or not terminal.stdin.isatty():
        return False
    terminal.stderr.write(f"Cancel job {request_id}? [y/N] ")
    terminal.stderr.flush()
    try:
        answer = terminal.stdin.readline()
    except KeyboardInterrupt:
        return False
    return answer.strip().lower() in ("y", "yes")
