"""The JSON API (same keys as `bgrun show --json`); scripts use it with a bearer token."""

from __future__ import annotations

import time
from urllib.parse import urlencode

from flask import Blueprint, Response, jsonify, request

from bgrun import control
from bgrun.dashboard.app import dashboard
from bgrun.dashboard.present import (
    fill_page,
    full_counts,
    job_chunk,
    parse_filters,
    parse_int,
)
from bgrun.records import JobRecord
from bgrun.waiting import Look, job_dict

bp = Blueprint("api", __name__, url_prefix="/api")
BY = "dashboard"


@bp.get("/jobs")
def jobs() -> Response:
    """Jobs newest first: ?status=S&target=T&queue=Q&limit=N (default 50)&before=ID.

    A list stops early past about MAX_LIST_BYTES of JSON; whenever more may follow, a
    `Link: <…before=ID>; rel="next"` header says where the next page begins.
    """
    filters = parse_filters(request.args)
    store = dashboard().ctx.store
    now = time.time()

    def fetch(before: str | None, limit: int) -> list[JobRecord]:
        return store.list_jobs(status=filters.status, target=filters.target,
                               queue=filters.queue, limit=limit, before=before, now=now)

    found, older = fill_page(fetch, filters)
    look = Look(dashboard().ctx, now)
    response = jsonify([job_dict(job, look) for job in found])
    if older is not None:
        args = {**request.args.to_dict(), "before": older}
        response.headers["Link"] = f'<{request.path}?{urlencode(args)}>; rel="next"'
    return response


@bp.get("/counts")
def counts() -> Response:
    """How many jobs are in each status word, and in all.

    Asked every refresh, so it also settles jobs whose runner died: the page must not
    show them `running` forever while nothing else looks.
    """
    control.settle_orphans(dashboard().ctx)
    return jsonify(full_counts(dashboard().ctx.store.counts()))


@bp.get("/jobs/<job_id>")
def job(job_id: str) -> Response:
    """One job."""
    return jsonify(job_dict(dashboard().ctx.store.get(job_id), Look(dashboard().ctx, time.time())))


@bp.get("/jobs/<job_id>/attempts")
def attempts(job_id: str) -> Response:
    """Every attempt of the job, oldest first (times as UTC epoch seconds)."""
    found = dashboard().ctx.store.attempts_of(dashboard().ctx.store.get(job_id).id)
    return jsonify([a._asdict() for a in found])


@bp.get("/jobs/<job_id>/output")
def output(job_id: str) -> Response:
    """Captured output from byte ?offset=N on (the tail without it), and where to go on."""
    record = dashboard().ctx.store.get(job_id)
    offset = request.args.get("offset")
    start = None if offset is None else parse_int(request.args, "offset", 0, 0, 2**62)
    chunk = job_chunk(dashboard().ctx.store, record, start, dashboard().ctx.config.host)
    return jsonify({"text": chunk.text, "offset": chunk.start, "next": chunk.end,
                    "reset": chunk.reset, "status": record.status_at(time.time()).value})


@bp.post("/jobs/<job_id>/cancel")
def cancel(job_id: str) -> Response:
    """Cancel a queued, scheduled or running job (a running one ends shortly after)."""
    return jsonify(control.cancel_job(dashboard().ctx, job_id, by=BY).to_dict(time.time()))


@bp.post("/jobs/<job_id>/retry")
def retry(job_id: str) -> Response:
    """Queue a failed or cancelled job again, under the same id."""
    return jsonify(control.retry_job(dashboard().ctx, job_id, by=BY).to_dict(time.time()))


@bp.post("/jobs/<job_id>/delete")
def delete(job_id: str) -> Response:
    """Delete a finished job and its output."""
    return jsonify({"deleted": control.delete_jobs(dashboard().ctx, [job_id], by=BY)})


@bp.get("/stats")
def stats() -> Response:
    """Jobs completed and failed per minute over ?minutes=N (default 60), queue counts now."""
    from bgrun.stats import MAX_MINUTES, finished_stats

    minutes = parse_int(request.args, "minutes", 60, 1, MAX_MINUTES)
    return jsonify(finished_stats(dashboard().ctx.store, minutes))


@bp.get("/runners")
def runners() -> Response:
    """Every live runner: pid, slot, queues, since when, idle or the job it runs."""
    from bgrun.runners import live_runners

    return jsonify(live_runners(dashboard().ctx))
