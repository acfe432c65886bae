"""Queueing a job: validate, store, make sure a runner will pick it up."""

from __future__ import annotations

import json
import os
import time
from typing import Any, NamedTuple

from bgrun import allowlist
from bgrun.config import Config
from bgrun.context import Context
from bgrun.errors import BadParamsError, BgrunError, ConfigError, NotAllowedError
from bgrun.launcher import without_secrets
from bgrun.params import encode_params, split_call
from bgrun.records import JobStatus
from bgrun.settle import ensure_runner, settle_orphans_now_and_then
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


def validate(config: Config, req: Request, now: float) -> NewJob:
    """The job to store for `req`, asked for at `now`, or a RefusedError/ConfigError.

    Nothing is stored here. The delay counts from `now`, the moment of the request, so
    that the stored created_at (also `now`) and run_at are exactly `delay` apart.
    """
    rules = allowlist.load(config.allowlist)
    try:
        rule = rules.check(req.target, req.method)
    except NotAllowedError as exc:
        raise _with_split_hint(exc, rules, req.target) from None
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
        python=config.require_python(), env_json=json.dumps(without_secrets(os.environ)),
        allowlist=str(config.allowlist), unique_key=req.unique,
    )


def enqueue(ctx: Context, req: Request) -> tuple[str, bool]:
    """Validate and store the job, then make sure a runner will run it.

    Returns (job id, True if a new job was stored). A refusal is written to the error log
    with `job=-` and raised; nothing is stored then.
    """
    ctx.log.check()  # an unwritable log refuses the job before it is stored
    req = _plain_names(req)
    now = time.time()
    try:
        job = validate(ctx.config, req, now)
    except BgrunError as exc:
        ctx.log.event(job="-", target=_loggable(req.target), method=_loggable(req.method),
                      status="rejected", error=f"{exc.kind}: {exc}")
        raise
    job_id, created = ctx.store.insert(job, now)
    if created:
        try:
            status = JobStatus.SCHEDULED if job.run_at > now else JobStatus.QUEUED
            ctx.log.event(job=job_id, target=job.target, method=job.method, status=status,
                          attempt=0,
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

    return req._replace(target=fix(req.target), method=fix(req.method), unique=fix(req.unique))


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
