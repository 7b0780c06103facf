"""django-q2 tasks: thin wrappers that call one service each. No GPU work ever runs here."""
from __future__ import annotations

from django.conf import settings

from videojobs import services


def prepare_input(job_id: int) -> str:
    job = services.prepare_job_input(job_id=job_id)
    return "skipped" if job is None else job.status


def rescue_expired_leases() -> str:
    report = services.rescue_expired_leases()
    return f"requeued={report.requeued} failed={report.failed} cancelled={report.cancelled}"


def mark_lost_workers() -> str:
    report = services.mark_lost_workers()
    return f"requeued={report.requeued} failed={report.failed} cancelled={report.cancelled}"


def fail_timed_out_jobs() -> int:
    return services.fail_timed_out_jobs()


def fail_jobs_without_lora_holder() -> int:
    return services.fail_jobs_without_lora_holder()


def requeue_stale_inputs() -> int:
    return services.requeue_stale_inputs()


def enforce_output_quota() -> int:
    return services.enforce_output_quota()


def purge_finished_jobs() -> int:
    return services.purge_finished_jobs(older_than_days=settings.JOB_HISTORY_DAYS)


def deliver_webhook(delivery_id: int) -> str:
    return services.deliver_webhook(delivery_id=delivery_id) or "not due"


def deliver_due_webhooks() -> int:
    return services.deliver_due_webhooks()
