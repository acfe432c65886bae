"""The `list_jobs` query, built once from either backend's named statement pieces."""

from __future__ import annotations

import time
from types import ModuleType

from bgrun.records import JobStatus
from bgrun.store.rows import job_key


def list_statement(named: ModuleType, *, status: str | None, target: str | None,
                   queue: str | None, limit: int, before: str | None, now: float | None
                   ) -> tuple[str, dict[str, object]]:
    """(statement, arguments) of base.Store.list_jobs, from `named`'s LIST_* pieces."""
    word = None if status is None else JobStatus(status).value
    statement = named.LIST + " " + named.LIST_BY_STATUS[word]
    args: dict[str, object] = {"now": time.time() if now is None else now}
    if target:  # a target, or a target.method as `list` prints it
        statement += named.LIST_TARGET
        args["target"] = target
        args["owner"], _, args["method"] = target.rpartition(".")
    if queue:
        statement += named.LIST_QUEUE
        args["queue"] = queue
    if before is not None:
        statement += named.LIST_BEFORE
        args["before"] = job_key(before)
    statement += named.LIST_ORDER
    if limit > 0:
        statement += f" LIMIT {int(limit)}"
    return statement, args
