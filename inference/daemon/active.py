"""The job a daemon group is running now, as every rank knows it."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ActiveJob:
    job_id: int
    attempt: int
    request_id: str
    deadline: float  # epoch seconds: started_at + TASK_TIMEOUT
    lost: threading.Event = field(default_factory=threading.Event)
    position: str = "start"  # where the job last synchronised: "step 7/30", "decoding chunk 3/21"

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> "ActiveJob":
        """From the job message rank 0 broadcast."""
        return cls(job_id=message["job_id"], attempt=message["attempt"], request_id=message["request_id"],
                   deadline=message["deadline"])
