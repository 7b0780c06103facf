"""Every write to a job or a worker row: the state machine of design section 3.

Each transition is one guarded ``UPDATE ... WHERE status = ...``: a transition that lost a
race updates nothing and reports it, so no interleaving can move a finished job. The
daemon's writes are also fenced on (id, attempt, InProgress), so a zombie whose lease was
rescued cannot overwrite the attempt that replaced it. Refusals raise
:class:`videojobs.errors.JobRefused`.

Callers (views, tasks, the admin, the daemon) use the names re-exported here:

- submit: admission and the input image (submit_job, prepare_job_input, mark_input_ready, fail_input)
- lease: the daemon's claim, heartbeat, progress and outcomes
- cancel: a client's cancel
- events: end_jobs (the one place a job ends) and record_event
- sweeps: expired leases, lost workers, timeouts, lost input tasks
- workers: the worker registry
- webhooks: deliveries, their retries and redelivery
- retention: the history purge and the output disk quota
- operator: requeue, retry as a new job, delete a video
- handoff: the django-q2 tasks and the NOTIFY sent at commit
- openai_videos: the /v1 API's delete and remix
"""
from videojobs.services.cancel import request_cancel
from videojobs.services.events import CANCELLED_REASON, end_jobs, record_event, redact_paths
from videojobs.services.handoff import READY_CHANNEL
from videojobs.services.lease import (
    claim_next_job,
    complete_job,
    fail_job,
    finish_cancelled_job,
    heartbeat,
    is_cancel_requested,
    release_job,
    report_progress,
)
from videojobs.services.openai_videos import delete_job, remix_job
from videojobs.services.operator import OPERATOR_DELETED_REASON, delete_job_output, requeue_job, retry_as_new_job
from videojobs.services.retention import EXPIRED_REASON, enforce_output_quota, purge_finished_jobs
from videojobs.services.submit import fail_input, mark_input_ready, prepare_job_input, request_fingerprint, submit_job
from videojobs.services.sweeps import (
    RescueReport,
    fail_jobs_without_lora_holder,
    fail_timed_out_jobs,
    mark_lost_workers,
    requeue_stale_inputs,
    rescue_expired_leases,
)
from videojobs.services.webhooks import (
    deliver_due_webhooks,
    deliver_webhook,
    queue_webhook,
    redeliver_webhook,
    webhook_retry_delay,
)
from videojobs.services.workers import register_worker, retire_dead_predecessors, update_worker, worker_heartbeat
from videojobs.services.workers import record_worker_resources

__all__ = [
    "CANCELLED_REASON", "EXPIRED_REASON", "OPERATOR_DELETED_REASON", "READY_CHANNEL", "RescueReport",
    "claim_next_job", "complete_job", "delete_job", "delete_job_output", "deliver_due_webhooks", "deliver_webhook", "end_jobs",
    "enforce_output_quota", "fail_input", "fail_job", "fail_jobs_without_lora_holder", "fail_timed_out_jobs", "finish_cancelled_job", "heartbeat",
    "is_cancel_requested", "mark_input_ready", "mark_lost_workers", "prepare_job_input", "purge_finished_jobs",
    "queue_webhook", "record_event", "record_worker_resources", "redact_paths", "redeliver_webhook", "register_worker",
    "release_job", "remix_job",
    "report_progress", "request_cancel", "request_fingerprint", "requeue_job", "requeue_stale_inputs",
    "rescue_expired_leases", "retire_dead_predecessors", "retry_as_new_job", "submit_job", "update_worker",
    "webhook_retry_delay", "worker_heartbeat",
]
