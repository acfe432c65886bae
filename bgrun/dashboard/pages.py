"""The HTML pages: sign in, the job list, a job, and the actions' forms (all POST)."""

from __future__ import annotations

import time

from flask import Blueprint, redirect, render_template, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from bgrun import control
from bgrun.dashboard import security
from bgrun.dashboard.app import (
    client,
    csrf_token,
    current_session,
    dashboard,
    request_host,
    throttled,
)
from bgrun.dashboard.present import (
    ACTIVE_WORDS,
    DEFAULT_LIMIT,
    STATUS_WORDS,
    duration,
    fill_page,
    full_counts,
    job_chunk,
    parse_filters,
    pretty_json,
    retries_left,
    timings,
)
from bgrun.dashboard.sessions import COOKIE
from bgrun.records import JobRecord

bp = Blueprint("pages", __name__)
BY = "dashboard"


@bp.get("/login")
def login() -> str | BaseResponse:
    """The sign-in form (the one page that answers without the token)."""
    if current_session() is not None:
        return redirect(url_for("pages.jobs"))
    return render_template("login.html")


@bp.post("/login")
def login_post() -> tuple[str, int] | BaseResponse:
    """Check the token; on success start a server-side session with its own CSRF token.

    The cookie gets only the session's random id, host-only, HttpOnly, SameSite=Strict
    and without an expiry (the browser forgets it when it closes; the server sooner).
    """
    dash = dashboard()
    refused = throttled()
    if refused is not None:
        return refused
    given = request.form.get("token", "").strip()
    if not given or not security.tokens_equal(given, dash.token):
        dash.throttle.failed(client())
        return render_template("login.html", error="That token is not right."), 401
    dash.throttle.succeeded(client())
    dash.sessions.end(request.cookies.get(COOKIE))  # never keep an id chosen before sign-in
    sid, _ = dash.sessions.start(request_host())
    response = redirect(url_for("pages.jobs"), 303)
    response.set_cookie(COOKIE, sid, path="/", httponly=True, samesite="Strict",
                        secure=request.is_secure)
    return response


@bp.post("/logout")
def logout() -> BaseResponse:
    """End the session for good: its id is worth nothing afterwards, wherever it went."""
    dashboard().sessions.end(request.cookies.get(COOKIE))
    response = redirect(url_for("pages.login"), 303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="Strict")
    return response


@bp.get("/")
def jobs() -> str:
    """The job list: counts per status, filters, newest first, one page of jobs."""
    filters = parse_filters(request.args)
    store = dashboard().ctx.store
    now = time.time()

    def fetch(before: str | None, limit: int) -> list[JobRecord]:
        return store.list_jobs(status=filters.status, target=filters.target,
                               queue=filters.queue, limit=limit, before=before, now=now)

    found, older = fill_page(fetch, filters)
    rows = [(job.to_dict(now), duration(timings(job, now)["ran"])) for job in found]
    return render_template("jobs.html", rows=rows, filters=filters, statuses=STATUS_WORDS,
                           counts=full_counts(store.counts(now)), older=older,
                           queues=store.active_by_queue(now),
                           limit=None if filters.limit == DEFAULT_LIMIT else filters.limit,
                           csrf=csrf_token())


@bp.get("/jobs/<job_id>")
def job(job_id: str) -> str:
    """One job: every field, timings, attempts, error and traceback, and its output's tail."""
    store = dashboard().ctx.store
    now = time.time()
    record = store.get(job_id)
    info = record.to_dict(now)
    chunk = job_chunk(store, record, None, dashboard().ctx.config.host)
    return render_template(
        "job.html", job=info, retries_left=retries_left(record),
        timings={k: duration(v) for k, v in timings(record, now).items()},
        attempts=store.attempts_of(record.id), output=chunk, active=ACTIVE_WORDS,
        params=pretty_json(info["params"]), result=pretty_json(info["result"]),
        kwargs=None if info["kwargs"] is None else pretty_json(info["kwargs"]),
        csrf=csrf_token(),
    )


@bp.get("/runners")
def runners() -> str:
    """Every live runner and what it does now (refreshed by the page's script)."""
    from bgrun.runners import live_runners

    return render_template("runners.html", runners=live_runners(dashboard().ctx),
                           csrf=csrf_token())


@bp.post("/jobs/<job_id>/cancel")
def cancel(job_id: str) -> BaseResponse:
    """Cancel a queued, scheduled or running job, then show it."""
    control.cancel_job(dashboard().ctx, job_id, by=BY)
    return redirect(url_for("pages.job", job_id=job_id), 303)


@bp.post("/jobs/<job_id>/retry")
def retry(job_id: str) -> BaseResponse:
    """Queue a failed or cancelled job again under its id, then show it."""
    control.retry_job(dashboard().ctx, job_id, by=BY)
    return redirect(url_for("pages.job", job_id=job_id), 303)


@bp.post("/jobs/<job_id>/delete")
def delete(job_id: str) -> BaseResponse:
    """Delete a finished job and its output, then go back to the list."""
    control.delete_jobs(dashboard().ctx, [job_id], by=BY)
    return redirect(url_for("pages.jobs"), 303)
