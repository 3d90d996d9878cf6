"""The names of a job's states (``ROOT/jobs/<id>/state.json``) and of what ``sweep status`` derives from them.

One definition for every executor, the status table and the tests: a state name spelled differently in two places
would silently count a finished job as unfinished.
"""
from __future__ import annotations

__all__ = ["PENDING", "RUNNING", "DONE", "FAILED", "REQUEUED", "CANCELLED", "UNKNOWN", "LOST", "NOT_SUBMITTED",
           "ENDED", "STATUS_ORDER", "PROBLEMS"]

# written to state.json
PENDING = "pending"        # planned, not started (also: no state file yet)
RUNNING = "running"
DONE = "done"
FAILED = "failed"
REQUEUED = "requeued"      # preempted or timed out; submitit requeued it
CANCELLED = "cancelled"
UNKNOWN = "unknown"        # the state file could not be read
# derived by `sweep status` from the state and the scheduler's queue
LOST = "lost"              # the state says running, the scheduler no longer knows the job
NOT_SUBMITTED = "not submitted"

ENDED = (DONE, FAILED, CANCELLED)
STATUS_ORDER = (DONE, RUNNING, PENDING, REQUEUED, NOT_SUBMITTED, FAILED, LOST, CANCELLED)
PROBLEMS = (FAILED, LOST, CANCELLED)
