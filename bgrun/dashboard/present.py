"""What the pages and the API show: query filters, durations, retries left, output tails."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bgrun.errors import BadQueueError
from bgrun.joblog import BIDI
from bgrun.outcopy import read_from_store
from bgrun.queues import check_queue_name
from bgrun.records import JobRecord, JobStatus
from bgrun.store import Store
from bgrun.store.rows import parse_job_id

STATUS_WORDS = tuple(s.value for s in JobStatus)
ACTIVE_WORDS = tuple(s.value for s in JobStatus if not s.finished)
DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
TAIL_BYTES = 64 * 1024
#: About the most JSON one list (API or page) may weigh: past it, the list stops early
#: (with at least one job) and says where the next page begins. 1,000 jobs with big
#: params would otherwise be tens of megabytes in one answer, and in memory.
MAX_LIST_BYTES = 2 * 1024 * 1024
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_BIDI = re.compile(f"[{BIDI}]")


class QueryError(ValueError):
    """Raised when a query string asks for something malformed (answered 400)."""


@dataclass(frozen=True)
class Filters:
    """Which jobs a list shows: status word, target, queue, page (`before` id) and size."""

    status: str | None = None
    target: str | None = None
    before: str | None = None
    limit: int = DEFAULT_LIMIT
    queue: str | None = None


def parse_filters(args: Mapping[str, str]) -> Filters:
    """The list filters of a query string; QueryError when one is malformed."""
    status = args.get("status") or None
    if status is not None and status not in STATUS_WORDS:
        raise QueryError(f"status must be one of: {', '.join(STATUS_WORDS)}")
    target = (args.get("target") or "").strip() or None
    if target is not None and len(target) > 500:
        raise QueryError("target is too long")
    before = args.get("before") or None
    if before is not None and parse_job_id(before) is None:
        raise QueryError("before must be a job id")
    queue = (args.get("queue") or "").strip() or None
    if queue is not None:
        try:
            check_queue_name(queue)
        except BadQueueError as exc:
            raise QueryError(f"queue: {exc}") from None
    return Filters(status, target, before, parse_int(args, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
                   queue)


#: Reads one batch of a list: (the `before` id or None, how many) -> jobs, newest first.
Fetch = Callable[[str | None, int], list[JobRecord]]


def weight(job: JobRecord) -> int:
    """About the bytes of `job` as JSON: its text fields, plus room for the rest."""
    return 512 + sum(len(value) for value in job if isinstance(value, str))


def fill_page(fetch: Fetch, filters: Filters, budget: int = MAX_LIST_BYTES
              ) -> tuple[list[JobRecord], str | None]:
    """Up to `filters.limit` jobs from `filters.before` on, newest first, stopping before
    their weight passes `budget` (the first job always counts).

    Read in batches: the first of at most DEFAULT_LIMIT jobs (a default page is one
    query), each next one as many as the room left holds at the weight seen so far, so
    rows far past the budget are never read into memory.
    Returns (the jobs, the `before` id of the next page, or None when no more may follow).
    """
    found: list[JobRecord] = []
    total = 0
    before = filters.before
    want = min(DEFAULT_LIMIT, filters.limit)
    while True:
        batch = fetch(before, want)
        for job in batch:
            total += weight(job)
            if found and total > budget:
                return found, found[-1].id
            found.append(job)
        if len(batch) < want:
            return found, None
        if len(found) >= filters.limit:
            return found, found[-1].id
        before = batch[-1].id
        room = (budget - total) * len(found) // total + 1
        want = max(1, min(filters.limit - len(found), room))


def parse_int(args: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    """A whole-number query parameter within [low, high]; QueryError otherwise."""
    raw = args.get(name)
    if raw is None or raw == "":
        return default
    if not re.fullmatch(r"[0-9]{1,19}", raw) or not low <= int(raw) <= high:
        raise QueryError(f"{name} must be a whole number from {low} to {high}")
    return int(raw)


def full_counts(counts: Mapping[str, int]) -> dict[str, int]:
    """Jobs per status word, every word present, plus `total`."""
    out = {word: int(counts.get(word, 0)) for word in STATUS_WORDS}
    out["total"] = sum(out.values())
    return out


def retries_left(job: JobRecord) -> int:
    """How many more attempts a failure of this job would still get."""
    return max(0, job.retries - max(0, job.attempts - 1))


def duration(seconds: float | None) -> str:
    """A duration for people: '0.42 s', '12 s', '3 min 4 s', '2 h 5 min', '3 d 4 h'."""
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.2f} s"
    whole = int(seconds)
    for size, unit, small, small_unit in ((86400, "d", 3600, "h"), (3600, "h", 60, "min"),
                                          (60, "min", 1, "s")):
        if whole >= size:
            return f"{whole // size} {unit} {(whole % size) // small} {small_unit}"
    return f"{whole} s"


def timings(job: JobRecord, now: float) -> dict[str, float | None]:
    """How long the job waited for a slot, ran, and took in all (so far, while running)."""
    end = job.finished_at if job.finished_at is not None else now
    started = job.started_at
    return {
        "waited": None if started is None else max(0.0, started - min(job.run_at, started)),
        "ran": None if started is None else end - started,
        "total": end - job.created_at,
    }


def pretty_json(value: Any) -> str:
    """A JSON value indented for reading (the page escapes it)."""
    return json.dumps(value, indent=2, ensure_ascii=False)


@dataclass(frozen=True)
class Chunk:
    """A piece of a job's captured output: text and the byte range it came from."""

    text: str
    start: int
    end: int
    reset: bool  # the file is shorter than the caller's offset: start over from `start`


def read_chunk(path: Path, offset: int | None, limit: int = TAIL_BYTES) -> Chunk:
    """Output from byte `offset` on (at most `limit` bytes), or its tail when offset is None."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return Chunk("", 0, 0, bool(offset))
    reset = offset is not None and offset > size
    start = max(0, size - limit) if offset is None or reset else offset
    with path.open("rb") as f:
        f.seek(start)
        data = f.read(min(limit, size - start))
    return Chunk(printable(data.decode("utf-8", "replace")), start, start + len(data), reset)


def job_chunk(store: Store, job: JobRecord, offset: int | None, host: str) -> Chunk:
    """read_chunk of the job's output file, or, where the store keeps the output and the
    file is on another host (`host`: this one), of the copy in the store."""
    if not read_from_store(store, job, host):
        return read_chunk(Path(job.output), offset)
    stored = store.output_of(job.id)
    data = b"" if stored is None else stored[0]
    reset = offset is not None and offset > len(data)
    start = max(0, len(data) - TAIL_BYTES) if offset is None or reset else offset
    piece = data[start:start + TAIL_BYTES]
    return Chunk(printable(piece.decode("utf-8", "replace")), start, start + len(piece), reset)


def printable(text: str) -> str:
    """Output text with line breaks kept, other control characters shown as U+FFFD, and
    bidirectional controls spelled out."""
    return spell_bidi(_CONTROL.sub("\ufffd", text.replace("\r\n", "\n").replace("\r", "\n")))


def visible(value: Any) -> Any:
    """A string with its bidirectional controls spelled out as `[U+202E]` (anything else
    as it is): raw, they would reorder what the reader sees, in and around the value.

    Every `{{ value }}` of the templates goes through here (Jinja's `finalize`), and
    app.js does the same to what it shows from the API. Markup is left alone: its values
    went through here already.
    """
    return spell_bidi(value) if type(value) is str else value


def spell_bidi(text: str) -> str:
    """`text` with each bidirectional control written as `[U+XXXX]`."""
    if not _BIDI.search(text):
        return text
    return _BIDI.sub(lambda m: f"[U+{ord(m.group()):04X}]", text)
