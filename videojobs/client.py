"""A small HTTP client for this service's API, for scripts and for `manage.py submit_video`.

Plain Python on urllib3 (no Django, no torch): copy-paste friendly and importable anywhere.

    client = VideoGenClient("http://127.0.0.1:8088", api_key="...")
    request_id = client.submit(image="cat.png", prompt="A cat surfing a wave at sunset")
    document = client.wait(request_id)          # the final status document
    if document["status"] == "Succeed":
        client.download(request_id, "cat.mp4")

Transient failures (connection refused, 502/503/504, and 429 on everything but a submit) are
retried with exponential backoff, honouring Retry-After. Every submit carries an
Idempotency-Key (one is made up when none is given), so a submit replayed after a lost
answer returns the same job instead of queueing a second one.
"""
from __future__ import annotations

import json
import mimetypes
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import urllib3
from urllib3.util.retry import Retry

TERMINAL_STATUSES = frozenset({"Succeed", "Failed", "Cancelled"})
DEFAULT_SERVER = "http://127.0.0.1:8088"
_TRANSIENT = frozenset({502, 503, 504})


class ClientError(Exception):
    """Base of what the client raises."""


class ServerUnreachable(ClientError):
    """No answer at all (refused, reset, timed out) after the retries."""


class ApiError(ClientError):
    """The service answered with an error body: {"error", "message", "fields"/"detail"}."""

    def __init__(self, status: int, body: dict[str, Any], retry_after: str | None = None) -> None:
        self.status = status
        self.code = str(body.get("error") or f"HTTP_{status}")
        self.message = str(body.get("message") or body.get("detail") or "")
        fields = body.get("fields", body.get("detail"))
        self.fields: dict[str, Any] = fields if isinstance(fields, dict) else {}
        self.retry_after = retry_after
        super().__init__(f"{self.code} (HTTP {status}): {self.message}")


def is_url(image: str | os.PathLike) -> bool:
    return isinstance(image, str) and image.lower().startswith(("http://", "https://"))


class _Retry(Retry):
    """Retries only the listed statuses: urllib3 alone would also retry any 413, 429 or 503 that
    carries Retry-After, a submit refused for a full queue among them."""

    def is_retry(self, method: str, status_code: int, has_retry_after: bool = False) -> bool:
        return status_code in (self.status_forcelist or ()) and super().is_retry(method, status_code, has_retry_after)


def _retry_policy(attempts: int, *, also_429: bool) -> Retry:
    return _Retry(
        total=attempts,
        connect=attempts,
        read=attempts,
        status=attempts,
        status_forcelist=_TRANSIENT | ({429} if also_429 else set()),
        allowed_methods=None,  # POSTs too: submits are idempotent by key, cancel and status by nature
        backoff_factor=0.5,
        backoff_max=10,
        respect_retry_after_header=True,
        raise_on_status=False,  # the last error answer is turned into an ApiError below
        redirect=3,
    )


class VideoGenClient:
    """One service at ``server`` (e.g. ``http://127.0.0.1:8088``), optionally with an API key."""

    def __init__(self, server: str = DEFAULT_SERVER, *, api_key: str | None = None, retries: int = 8,
                 connect_timeout: float = 5.0, read_timeout: float = 60.0) -> None:
        self.server = server.rstrip("/")
        self.api_key = api_key
        self.retries = retries
        self._http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout))

    def submit(self, *, image: str | os.PathLike, prompt: str, params: dict[str, Any] | None = None,
               idempotency_key: str | None = None) -> str:
        """Queue a job and return its requestId. ``image`` is an http(s) URL the service fetches,
        or a local PNG/JPEG/WebP file that is uploaded (multipart/form-data)."""
        fields = {"prompt": prompt, **{k: v for k, v in (params or {}).items() if v is not None}}
        headers = {"Idempotency-Key": idempotency_key or uuid.uuid4().hex}
        if is_url(image):
            body = json.dumps({**fields, "image_url": image}).encode()
            headers["Content-Type"] = "application/json"
        else:
            path = Path(image)
            mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            form: dict[str, Any] = {k: _form_value(v) for k, v in fields.items()}
            form["image"] = (path.name, path.read_bytes(), mime)
            body, headers["Content-Type"] = urllib3.encode_multipart_formdata(form)
        answer = self._request("POST", "/video/submit", body=body, headers=headers, also_429=False)
        return answer["requestId"]

    def status(self, request_id: str) -> dict[str, Any]:
        """The job's status document (status, phase, progress, step, total_steps, queue_position,
        eta_seconds, reason, error_code, results, ...)."""
        return self._request("GET", f"/video/{request_id}")

    def cancel(self, request_id: str) -> dict[str, Any]:
        return self._request("POST", "/video/cancel", body=json.dumps({"requestId": request_id}).encode(),
                             headers={"Content-Type": "application/json"})

    def wait(self, request_id: str, *, poll: float = 1.0,
             on_update: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Poll until the job ends; ``on_update`` sees every status document. Returns the last."""
        while True:
            document = self.status(request_id)
            if on_update is not None:
                on_update(document)
            if document["status"] in TERMINAL_STATUSES:
                return document
            time.sleep(poll)

    def download(self, request_id: str, output: str | os.PathLike) -> Path:
        """Save the job's mp4 to ``output`` (written beside it first, then renamed into place)."""
        output = Path(output)
        output.parent.mkdir(parents=True, exist_ok=True)
        partial = output.with_name(output.name + ".part")
        response = self._send("GET", f"/videos/{request_id}.mp4", preload_content=False)
        try:
            if response.status != 200:
                raise _api_error(response.status, response.read(), response.headers.get("Retry-After"))
            with open(partial, "wb") as out:
                for chunk in response.stream(1 << 20):
                    out.write(chunk)
        except urllib3.exceptions.HTTPError as error:
            partial.unlink(missing_ok=True)
            raise ServerUnreachable(f"{self.server} broke off the download: {error}") from None
        except BaseException:  # Ctrl-C too: no half-written video left behind
            partial.unlink(missing_ok=True)
            raise
        finally:
            response.release_conn()
        os.replace(partial, output)
        return output

    def _request(self, method: str, path: str, *, body: bytes | None = None, headers: dict | None = None,
                 also_429: bool = True) -> dict[str, Any]:
        response = self._send(method, path, body=body, headers=headers, also_429=also_429)
        if not 200 <= response.status < 300:
            raise _api_error(response.status, response.data, response.headers.get("Retry-After"))
        return json.loads(response.data)

    def _send(self, method: str, path: str, *, body: bytes | None = None, headers: dict | None = None,
              also_429: bool = True, preload_content: bool = True) -> urllib3.BaseHTTPResponse:
        headers = {"Accept": "application/json", **(headers or {})}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        try:
            return self._http.request(method, self.server + path, body=body, headers=headers,
                                      retries=_retry_policy(self.retries, also_429=also_429),
                                      preload_content=preload_content)
        except urllib3.exceptions.MaxRetryError as error:
            raise ServerUnreachable(f"{self.server} did not answer: {error.reason}") from None
        except urllib3.exceptions.HTTPError as error:
            raise ServerUnreachable(f"{self.server} did not answer: {error}") from None


def _form_value(value: Any) -> str:
    # Form fields are text: numbers as their JSON spelling, booleans as true/false; LoRA choices
    # as the form's "name:scale,name:scale".
    if isinstance(value, list) and value and all(isinstance(item, dict) and "name" in item for item in value):
        return ",".join(f"{item['name']}:{item.get('scale', 1.0)}" for item in value)
    return value if isinstance(value, str) else json.dumps(value)


def _api_error(status: int, data: bytes, retry_after: str | None) -> ApiError:
    try:
        body = json.loads(data)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {"message": data[:200].decode(errors="replace").strip()}
    return ApiError(status, body, retry_after)
