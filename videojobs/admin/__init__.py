"""The operators' admin: live job and worker lists, a job's whole story on its page (input,
video, timings, topology, cache reuse, attempts and errors, webhook deliveries), and the
operator actions, each through a service: cancel, requeue, retry as a new job, delete the
output, deliver a webhook again."""
from videojobs.admin import jobs, webhooks, workers  # noqa: F401 - each registers its ModelAdmin
