"""The LoRA adapters the inference workers hold, as their rows report them (the web never reads
LORA_DIR itself: the daemons may run on other hosts)."""
from __future__ import annotations

from typing import Any

from django.db import connection

from videojobs.models import InferenceWorker, WorkerState

# Workers whose adapters count: starting, idle or busy (a restarting daemon keeps its row's list
# until it has loaded again). Stopped and lost workers hold nothing.
_HOLDING_STATES = (WorkerState.LOADING, WorkerState.IDLE, WorkerState.BUSY)
CATALOG_FIELDS: tuple[str, ...] = ("format", "rank", "size_bytes", "sha256", "memory_bytes")


def lora_catalog(*, private: bool = True) -> list[dict[str, Any]]:
    """Each adapter held by some worker: name, format, rank, file size, short sha256, the memory
    it costs each rank, and the workers that hold it (their names only for operators)."""
    adapters: dict[str, dict[str, Any]] = {}
    workers = InferenceWorker.objects.filter(state__in=_HOLDING_STATES).order_by("pk").values_list("name", "loras")
    for index, (worker, held) in enumerate(workers, start=1):
        for entry in held or []:
            listed = adapters.setdefault(entry["name"], {"name": entry["name"],
                                                         **{key: entry.get(key) for key in CATALOG_FIELDS},
                                                         "workers": []})
            listed["workers"].append(worker if private else f"#{index}")
    return [adapters[name] for name in sorted(adapters)]


def available_lora_names() -> list[str]:
    """The names of the adapters some live worker holds, sorted."""
    names: set[str] = set()
    for held in InferenceWorker.objects.filter(state__in=_HOLDING_STATES).values_list("loras", flat=True):
        names.update(entry["name"] for entry in held or [])
    return sorted(names)


def held_lora_names(*, worker: str) -> list[str]:
    """The adapters one worker's row says it holds."""
    held = InferenceWorker.objects.filter(name=worker).values_list("loras", flat=True).first()
    return sorted(entry["name"] for entry in held or [])


def jobs_by_lora() -> dict[str, int]:
    """Kept jobs (any status) by the LoRA adapters they ran with: one count per adapter a job
    named, and "none" for the jobs without any."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT COALESCE(chosen ->> 'name', 'none'), COUNT(*) FROM videojobs_videojob "
            "LEFT JOIN LATERAL jsonb_array_elements(CASE WHEN jsonb_typeof(params -> 'loras') = 'array' "
            "THEN params -> 'loras' ELSE '[]'::jsonb END) AS chosen ON TRUE GROUP BY 1 ORDER BY 1"
        )
        return {name: count for name, count in cursor.fetchall()}
