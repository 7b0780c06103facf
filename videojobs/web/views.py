"""The job page: the submit form and the caller's jobs at ``/``, a live view of each job.

Same rules as the API: the form is checked by the API's ``SubmitSerializer``, jobs are written only
through ``videojobs.services`` and read through ``videojobs.selectors``, and every job is
filed under the owner the API would give this visitor (``auth.page_owner``). Another owner's
job answers 404 on every route, exactly like an unknown one.
"""
from __future__ import annotations

import io
import uuid
from functools import wraps
from pathlib import Path

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from PIL import Image
from rest_framework.exceptions import ValidationError

from videojobs import selectors, services
from videojobs.api.auth import page_owner
from videojobs.api.jobs import submit_validated
from videojobs.api.serializers import SubmitSerializer, form_data
from videojobs.errors import ErrorCode, JobAlreadyFinished, JobNotFound, JobRefused, refusal_payload, refusal_sentence
from videojobs.models import FINISHED_STATUSES, UNFINISHED_STATUSES, JobStatus, VideoJob
from videojobs.web import form

RECENT_JOBS = 20
THUMBNAIL_PIXELS = 320
STATUS_LABELS = {
    JobStatus.IN_QUEUE: "In queue",
    JobStatus.IN_PROGRESS: "In progress",
    JobStatus.SUCCEED: "Succeeded",
    JobStatus.FAILED: "Failed",
    JobStatus.CANCELLED: "Cancelled",
}


def owner_required(view):
    """Pass the visitor's owner to the view, or send them to log in (API_KEYS_REQUIRED)."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs):
        owner = page_owner(request)
        if owner is not None:
            return view(request, *args, owner=owner, **kwargs)
        login = redirect_to_login(request.get_full_path())
        if request.headers.get("HX-Request"):
            # An htmx poll would swap the login page into the panel: send the whole page there.
            response = HttpResponse(status=204)
            response["HX-Redirect"] = login.url
            return response
        return login

    return wrapper


def _not_found(request: HttpRequest) -> HttpResponse:
    return render(request, "jobs/not_found.html", status=404)


# --- the form and the list -------------------------------------------------------------


@require_http_methods(["GET", "POST"])
@never_cache  # Back after a submit reloads the form with a fresh idempotency key
@owner_required
def index(request: HttpRequest, *, owner: str) -> HttpResponse:
    if request.method == "GET":
        return _render_index(request, owner=owner)
    outcome = _submit(request, owner=owner)
    if isinstance(outcome, VideoJob):
        return redirect("page-job", request_id=outcome.request_id)  # POST-redirect-GET
    errors, status = outcome
    return _render_index(request, owner=owner, errors=errors, status=status)


def _submit(request: HttpRequest, *, owner: str) -> VideoJob | tuple[dict[str, list[str]], int]:
    """The job, or the errors by input and the status to answer them with."""
    data = form.with_preset(form_data(request.POST, request.FILES))
    serializer = SubmitSerializer(data=data, context={"multipart": True})
    try:
        serializer.is_valid(raise_exception=True)
        return submit_validated(data=dict(serializer.validated_data), owner=owner,
                                idempotency_key=form.form_key(request.POST))
    except ValidationError as invalid:  # the form's
        return form.field_errors(invalid.detail), 400
    except JobRefused as refused:  # the service's, answered as the API answers it
        status, body, _ = refusal_payload(refused)
        if "fields" in body:  # about one input (the upload, the webhook_url): shown beside it
            return form.field_errors(body["fields"]), status
        if refused.code == ErrorCode.IDEMPOTENCY_CONFLICT:  # the form's own key, which a visitor never sees
            return {form.NON_FIELD: ["This form was already sent with other values; it is ready to send again."]}, status
        return {form.NON_FIELD: [refusal_sentence(refused)]}, status


def _render_index(request: HttpRequest, *, owner: str, errors: dict | None = None, status: int = 200) -> HttpResponse:
    errors = errors or {}
    inputs = form.bound_inputs(values=request.POST if request.method == "POST" else None, errors=errors)
    context = {
        "inputs": inputs,
        "basic": [i for i in inputs.values() if not i.spec.advanced and i.spec.widget not in ("file", "url")],
        "advanced": [i for i in inputs.values() if i.spec.advanced],
        "advanced_open": any(i.errors for i in inputs.values() if i.spec.advanced),
        "form_errors": errors.get(form.NON_FIELD, []),
        # A fresh key after a conflict; the same one after other errors (no job was made).
        "form_key": (status != 409 and form.form_key(request.POST)) or uuid.uuid4().hex,
        **_recent_context(owner),
    }
    return render(request, "jobs/index.html", context, status=status)


def _recent_context(owner: str) -> dict:
    jobs = list(selectors.list_jobs(owner=owner)[:RECENT_JOBS])
    rows = [{"job": job, "label": STATUS_LABELS.get(job.status, job.status)} for job in jobs]
    return {"rows": rows, "recent_live": any(job.status in UNFINISHED_STATUSES for job in jobs)}


@require_GET
@never_cache
@owner_required
def recent(request: HttpRequest, *, owner: str) -> HttpResponse:
    """The list alone, polled by the index while one of its jobs is unfinished."""
    return render(request, "jobs/_recent.html", _recent_context(owner))


# --- one job ---------------------------------------------------------------------------


def _panel_context(job: VideoJob) -> dict:
    document = selectors.status_document(job=job)
    results = document["results"] or {}
    eta = document["eta_seconds"]
    return {
        "job": job,
        "doc": document,
        "label": "Cancelling" if document["cancel_requested"] and job.status == JobStatus.IN_PROGRESS
        else STATUS_LABELS.get(job.status, job.status),
        "percent": round(document["progress"] * 100),
        "eta": None if eta is None else (f"{eta:.0f} s" if eta < 90 else f"{eta / 60:.0f} min"),
        "finished": job.status in FINISHED_STATUSES,
        "cancellable": job.status in UNFINISHED_STATUSES and not document["cancel_requested"],
        "video_url": results.get("video_url"),
        "results": results,
    }


@require_GET
@never_cache
@owner_required
def job_detail(request: HttpRequest, request_id: str, *, owner: str) -> HttpResponse:
    return _render_job(request, request_id, owner, "jobs/detail.html")


@require_GET
@never_cache
@owner_required
def job_panel(request: HttpRequest, request_id: str, *, owner: str) -> HttpResponse:
    """The live part of the job page, polled by htmx every second until the job ends."""
    return _render_job(request, request_id, owner, "jobs/_panel.html")


def _render_job(request: HttpRequest, request_id: str, owner: str, template: str) -> HttpResponse:
    try:
        job = selectors.get_job_for_status(request_id=request_id, owner=owner)
    except VideoJob.DoesNotExist:
        return _not_found(request)
    return render(request, template, _panel_context(job))


@require_POST
@owner_required
def job_cancel(request: HttpRequest, request_id: str, *, owner: str) -> HttpResponse:
    notice = ""
    try:
        job = services.request_cancel(request_id=request_id, owner=owner)  # another owner's: JobNotFound
    except JobNotFound:
        return _not_found(request)
    except JobAlreadyFinished as finished:
        job = finished.job
        notice = f"Too late to cancel: {finished.message}."
    if not request.headers.get("HX-Request"):
        return redirect("page-job", request_id=request_id)  # the form without JavaScript
    return render(request, "jobs/_panel.html", {**_panel_context(job), "notice": notice})


@require_GET
@owner_required
def job_input_image(request: HttpRequest, request_id: str, *, owner: str) -> HttpResponse:
    """A small PNG of the job's input image (stored normalised, possibly 40 megapixels)."""
    try:
        job = selectors.get_job(request_id=request_id, owner=owner)
    except VideoJob.DoesNotExist:
        return _not_found(request)
    path = Path(settings.MEDIA_ROOT) / job.input_image
    if not job.input_image or not path.is_file():
        return _not_found(request)
    with Image.open(path) as image:
        image.thumbnail((THUMBNAIL_PIXELS, THUMBNAIL_PIXELS))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
    response = HttpResponse(buffer.getvalue(), content_type="image/png")
    response["Cache-Control"] = "private, max-age=86400"  # a job's input never changes
    return response
