"""The periodic sweeps, registered as django-q2 schedules (idempotent, run at start-up)."""
from __future__ import annotations

from django.conf import settings
from django_q.models import Schedule

# func -> minutes between runs (django-q2 schedules have minute resolution).
def sweep_definitions() -> dict[str, int]:
    cleanup_minutes = max(settings.CLEANUP_INTERVAL // 60, 1)
    return {
        "videojobs.tasks.rescue_expired_leases": 1,
        "videojobs.tasks.mark_lost_workers": 1,
        "videojobs.tasks.fail_timed_out_jobs": 1,
        "videojobs.tasks.requeue_stale_inputs": 5,
        "videojobs.tasks.fail_jobs_without_lora_holder": 1,
        "videojobs.tasks.enforce_output_quota": cleanup_minutes,
        "videojobs.tasks.purge_finished_jobs": 60,
        "videojobs.tasks.deliver_due_webhooks": 1,
    }


def ensure_schedules() -> list[str]:
    names = []
    for func, minutes in sweep_definitions().items():
        name = func.rsplit(".", 1)[1]
        Schedule.objects.update_or_create(
            name=name,
            defaults={"func": func, "schedule_type": Schedule.MINUTES, "minutes": minutes, "repeats": -1},
        )
        names.append(name)
    return names
