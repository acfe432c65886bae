"""Human-readable output of the CLI: tables, job pages, durations."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from bgrun.records import AttemptRecord, JobRecord, JobStatus, progress_of

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw]?)")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """Seconds in '90', '90s', '15m', '12h', '7d' or '2w'; ValueError otherwise."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a duration like 30s, 15m, 12h or 7d")
    return float(match.group(1)) * _UNIT[match.group(2)]


def short_time(ts: float | None) -> str:
    """A stored time as a compact UTC timestamp for tables."""
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def one_line(text: str | None, width: int) -> str:
    """Text flattened to one printable line of at most `width` characters."""
    if not text:
        return ""
    flat = "".join(c if c.isprintable() else " " for c in text)
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def job_table(jobs: list[JobRecord],
              why_waiting: Callable[[JobRecord], str | None] = lambda job: None) -> str:
    """`bgrun list` as an aligned table; the last column says why a queued job waits."""
    now = time.time()
    rows = [("ID", "STATUS", "JOB", "QUEUE", "TRIES", "PROGRESS", "CREATED (UTC)",
             "ERROR / WAITING FOR")]
    for job in jobs:
        rows.append((
            job.id,
            job.status_at(now).value,
            one_line(f"{job.target}.{job.method}", 50),
            job.queue,
            f"{job.attempts}/{job.retries + 1}",
            progress_cell(progress_of(job.progress_json)),
            short_time(job.created_at),
            one_line(_why(why_waiting(job)) or job.error, 80),
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
        for row in rows
    ).rstrip()


def _why(reason: str | None) -> str | None:
    return None if reason is None else f"waiting: {reason}"


def job_page(job: dict[str, Any], attempts: list[AttemptRecord]) -> str:
    """`bgrun show` for people: fields, attempts, and the traceback printed readably."""
    lines = [f"job {job['id']}: {job['target']}.{job['method']}  [{job['status']}]"]
    for key in ("waiting_reason", "params", "kwargs", "queue", "priority", "attempts",
                "retries", "timeout", "unique", "created_at", "run_at", "started_at",
                "finished_at", "result", "error", "cwd", "output"):
        if job.get(key) is not None:
            lines.append(f"  {key + ':':13} {one_line(str(job[key]), 200)}")
    if job.get("progress"):
        lines.append(f"  {'progress:':13} {one_line(progress_line(job['progress']), 200)}")
    for attempt in attempts:
        took = "" if attempt.finished_at is None else (
            f" in {attempt.finished_at - attempt.started_at:.3f} s")
        lines.append(f"  attempt {attempt.number}: started {short_time(attempt.started_at)}"
                     f"{took} -> {attempt.outcome or JobStatus.RUNNING}"
                     + (f" ({one_line(attempt.error, 100)})" if attempt.error else ""))
    if job.get("traceback"):
        lines.append("  traceback:")
        lines.extend("    " + one_line(line, 2000) for line in str(job["traceback"]).splitlines())
    return "\n".join(lines)


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def progress_cell(progress: dict[str, Any] | None) -> str:
    """A report in a table cell: '42%' of a known total, else the count done; '-' if none."""
    if progress is None:
        return "-"
    total = progress["total"]
    if total:
        return f"{int(100 * progress['done'] / total)}%"
    return _number(progress["done"]) + ("" if total is None else "/0")


def progress_line(progress: dict[str, Any]) -> str:
    """A report in words: '42/100 (42%) loading rows  [at 2026-06-01 10:00:00]'."""
    done, total = progress["done"], progress["total"]
    text = _number(done) if total is None else f"{_number(done)}/{_number(total)}"
    if total:
        text += f" ({int(100 * done / total)}%)"
    if progress["message"]:
        text += f" {progress['message']}"
    at = progress.get("at")
    return text + (f"  [at {at[:19].replace('T', ' ')} UTC]" if at else "")


def runner_table(runners: list[dict[str, Any]]) -> str:
    """`bgrun runners` as an aligned table (or a sentence when none is alive)."""
    if not runners:
        return "no live runner"
    rows = [("HOST", "SLOT", "PID", "QUEUES", "LEASE", "STATE", "JOB", "SINCE (UTC)",
             "PROGRESS")]
    for r in runners:
        job = r["job"] or {}
        rows.append((
            str(r["host"] or "-"), str(r["slot"]), str(r["pid"]),
            ",".join(r["queues"]) if r["queues"] else "all",
            "-" if r["lease_age"] is None else f"{r['lease_age']:.1f}s",
            "idle" if r["idle"] else "busy",
            one_line(f"{job['id']} {job['target']}.{job['method']}", 50) if job else "-",
            (job.get("since") or "-")[:19].replace("T", " ") if job else "-",
            progress_cell(job.get("progress")) if job else "",
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in rows)
