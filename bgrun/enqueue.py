"""Queueing a job: validate, store, make sure a runner will pick it up."""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any, NamedTuple

from bgrun import allowlist
from bgrun.config import Config
from bgrun.context import Context, context_for
from bgrun.envmemo import environ_json
from bgrun.errors import (
    BadParamsError,
    BgrunError,
    ConfigError,
    NotAllowedError,
    StoreError,
)
from bgrun.files import private_dir
from bgrun.joblog import EventLog
from bgrun.params import encode_params, split_call
from bgrun.queues import DEFAULT_QUEUE, check_queue_name
from bgrun.records import JobStatus
from bgrun.settle import ensure_runner, settle_orphans_now_and_then
from bgrun.slots import state_path
from bgrun.store import NewJob


class Request(NamedTuple):
    """What a caller asks for; None means the allowlist's or BGRUN_*'s default."""

    target: str
    method: str
    params: object = None
    retries: int | None = None
    delay: float = 0
    priority: int | None = None
    timeout: float | None = None
    unique: str | None = None
    check_import: bool = True
    kwargs: object = None  # keyword arguments beside a positional list `params`
    queue: str | None = None


def validate(config: Config, req: Request, now: float) -> NewJob:
    """The job to store for `req`, asked for at `now`, or a RefusedError/ConfigError.

    Nothing is stored here. The delay counts from `now`, the moment of the request, so
    that the stored created_at (also `now`) and run_at are exactly `delay` apart.
    """
    # The state folder keeps the parsed allowlist between processes (allowcache.py).
    rules = allowlist.load(config.allowlist, cache=state_path(config.store))
    try:
        rule = rules.check(req.target, req.method)
    except NotAllowedError as exc:
        raise _with_split_hint(exc, rules, req.target) from None
    # The call's queue wins over the target's default in the allowlist.
    queue = check_queue_name(req.queue) if req.queue is not None else rule.queue
    params_json = encode_params(req.params, config.max_params_bytes, config.max_params_depth,
                                req.kwargs)
    cwd = os.getcwd()
    if req.check_import:
        from bgrun.callcheck import check_call  # (inspect: only callers that check pay)

        args, keywords = split_call(req.params, req.kwargs)
        checked = check_call(req.target, req.method, args, keywords, cwd)
        if checked != (args, keywords):  # command-line words converted by the annotations
            params_json = _encode_converted(config, req, *checked)
    retries = _first(req.retries, rule.retries, config.retries)
    priority = _first(req.priority, rule.priority, config.priority)
    timeout = next((t for t in (req.timeout, rule.timeout, config.timeout) if t is not None),
                   None)
    _check_numbers(retries, priority, timeout, req.delay)
    if req.unique is not None and (not req.unique or len(req.unique) > 200):
        raise BadParamsError("unique key must be 1 to 200 characters")
    return NewJob(
        target=req.target, method=req.method, params_json=params_json, priority=priority,
        retries=retries, timeout=timeout, run_at=now + req.delay, cwd=cwd,
        python=config.require_python(), env_json=_env_json(config),
        allowlist=str(config.allowlist), unique_key=req.unique, queue=queue or DEFAULT_QUEUE,
        queued_on=config.host,
    )


def _env_json(config: Config) -> str:
    """The environment stored for the job's runner: ours, on a store of one machine.

    A store shared by several hosts (a server URL) stores none: the job runs with its
    runner's environment, on whichever host (SPEC), and ours may hold secrets.
    """
    if config.store_url is not None:
        return "{}"
    return environ_json()


def enqueue(ctx: Context, req: Request) -> tuple[str, bool]:
    """Validate and store the job, then make sure a runner will run it.

    Returns (job id, True if a new job was stored). A refusal is written to the error log
    with `job=-` and raised; nothing is stored then.
    """
    now = time.time()
    try:
        job = validate(ctx.config, req, now)
    except BgrunError as exc:
        _log_refusal(ctx.log, req, exc)
        raise
    return _store(ctx, job, now)


def submit(config: Config, req: Request) -> tuple[str, bool]:
    """enqueue() for callers that have not opened the store: a refusal makes nothing.

    The request is checked before the log folder and the store are opened (and made, on
    first use), so a refused request in the wrong folder leaves no `logs/` behind. Its
    refusal is written to the error log when there is a project (see below).
    """
    req = _plain_names(req)
    now = time.time()
    job = checked(config, req, now)
    try:
        ctx = context_for(config)
    except StoreError as exc:  # unreachable, refused, not bgrun's: a refusal too
        _log_refusal_if_project(config, req, exc)
        raise
    ctx.log.check()  # an unwritable log refuses the job before it is stored
    return _store(ctx, job, now)


def checked(config: Config, req: Request, now: float) -> NewJob:
    """validate(), a refusal recorded (where there is a project) before it is raised."""
    try:
        return validate(config, req, now)
    except BgrunError as exc:
        _log_refusal_if_project(config, req, exc)
        raise


def _log_refusal_if_project(config: Config, req: Request, exc: BgrunError) -> None:
    """Record a refusal where there is a project (an allowlist or a log folder), else
    leave the folder as it was: the one stderr line is then the only record."""
    if not (config.log_dir.is_dir() or config.allowlist.is_file()):
        return
    with contextlib.suppress(ConfigError):  # the refusal itself is what the caller gets
        private_dir(config.log_dir)
        log = EventLog(config.log_dir, config.log_max_bytes, config.log_backups, config.host)
        _log_refusal(log, req, exc)


def _log_refusal(log: EventLog, req: Request, exc: BgrunError) -> None:
    log.event(job="-", target=_loggable(req.target), method=_loggable(req.method),
              queue=_loggable(req.queue) if req.queue is not None else None,
              status="rejected", error=f"{exc.kind}: {exc}")


def _store(ctx: Context, job: NewJob, now: float) -> tuple[str, bool]:
    """Store a checked job (created at `now`, the time it was checked against), log it,
    and make sure a runner will run it."""
    job_id, created = ctx.store.insert(job, now)
    if created:
        try:
            status = JobStatus.SCHEDULED if job.run_at > now else JobStatus.QUEUED
            ctx.log.event(job=job_id, target=job.target, method=job.method, queue=job.queue,
                          status=status, attempt=0,
                          priority=job.priority, retries=job.retries,
                          run_at=None if job.run_at <= now else f"{job.run_at - now:.1f}s")
        except ConfigError as exc:  # stored, and durable: say so, never hide it
            ensure_runner(ctx)
            raise ConfigError(f"job {job_id} is stored and waits, but {exc}") from None
    settle_orphans_now_and_then(ctx)
    ensure_runner(ctx)
    return job_id, created


def _plain_names(req: Request) -> Request:
    """`req` with its names as plain `str`: what is checked is what is stored."""
    def fix(value: Any) -> Any:
        return allowlist.plain(value) if isinstance(value, str) else value

    return req._replace(target=fix(req.target), method=fix(req.method), unique=fix(req.unique),
                        queue=fix(req.queue))


def _with_split_hint(exc: NotAllowedError, rules: allowlist.Allowlist, target: object
                     ) -> NotAllowedError:
    """`exc`, saying "did you mean" when `target` is an allowed TARGET.METHOD in one word."""
    if not isinstance(target, str):
        return exc
    owner, _, name = target.rpartition(".")
    rule = rules.rules.get(owner)
    if rule is None or name not in rule.methods:
        return exc
    return type(exc)(f"{exc}: did you mean TARGET METHOD as two words, '{owner} {name}'?")


def _first(*values: int | None) -> int:
    return next(v for v in values if v is not None)


def _check_numbers(retries: int, priority: int, timeout: float | None, delay: float) -> None:
    for name, value in (("retries", retries), ("priority", priority)):
        if isinstance(value, bool) or not isinstance(value, int) or abs(value) > 10**9:
            raise BadParamsError(f"{name} must be a whole number, not {value!r}")
    if retries < 0:
        raise BadParamsError("retries must be 0 or more")
    for name, number in (("timeout", timeout), ("delay", delay)):
        if number is None:
            continue
        if isinstance(number, bool) or not isinstance(number, int | float) or not (
            0 <= number < 10**9
        ):
            raise BadParamsError(f"{name} must be a number of seconds, not {number!r}")
    if timeout is not None and timeout <= 0:
        raise BadParamsError("timeout must be more than 0 seconds")


def _encode_converted(config: Config, req: Request, args: list[Any],
                      keywords: dict[str, Any]) -> str:
    """The params JSON again, after conversion, in the shape the caller gave them."""
    if isinstance(req.params, dict):
        return encode_params(keywords, config.max_params_bytes, config.max_params_depth)
    return encode_params(args, config.max_params_bytes, config.max_params_depth,
                         keywords if req.kwargs is not None else None)


def _loggable(name: object) -> str:
    return name[:300] if isinstance(name, str) else repr(name)[:300]
