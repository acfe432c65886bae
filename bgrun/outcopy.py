"""Copying a running job's output file into the store, for every host to read.

On a store shared by several hosts (`store.keeps_output`) the output file stays on the
host that runs the job, and its runner copies the file into the store while the job
runs, at least once a second and only when it grew, up to BGRUN_MAX_OUTPUT_BYTES; past
that a marker says where the rest is. The last copy is made before the verdict. A copy
that changes nothing means the attempt is no longer the job's running one: Fenced.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from bgrun.config import Config
from bgrun.lease import Fenced
from bgrun.records import JobRecord
from bgrun.store import Store

COPY_EVERY = 0.5  # seconds between two copies of a growing output file


class OutputCopy:
    """One attempt's output file, as its runner copies it into the store."""

    def __init__(self, config: Config, store: Store, job: JobRecord) -> None:
        self.store = store
        self.job = job
        self.active = store.keeps_output
        self.path = Path(job.output)
        self.limit = config.max_output_bytes
        self.host = config.host
        self.copied = -1  # the file's size at the last copy
        self.at = float("-inf")

    def poll(self, *, last: bool = False) -> None:
        """Copy the file if it grew and COPY_EVERY passed (`last`: whenever it grew)."""
        if not self.active or (not last and time.monotonic() - self.at < COPY_EVERY):
            return
        self.at = time.monotonic()
        try:
            size = os.stat(self.path).st_size
        except OSError:
            return  # (deleted under the job: nothing to copy)
        if size == self.copied or self.copied > self.limit:
            return  # unchanged, or cut already (what is kept cannot change)
        data, truncated = self._read(size)
        if not self.store.put_output(self.job.id, self.job.attempts, data, truncated):
            raise Fenced(f"job {self.job.id} attempt {self.job.attempts} was taken over")
        self.copied = size

    def _read(self, size: int) -> tuple[bytes, bool]:
        with self.path.open("rb") as f:
            data = f.read(self.limit)
        if size <= self.limit:
            return data, False
        marker = (f"\n--- bgrun: output cut at {self.limit} bytes (BGRUN_MAX_OUTPUT_BYTES);"
                  f" the rest is in {self.path} on host {self.host}\n").encode()
        return data[:max(self.limit - len(marker), 0)] + marker, True


def read_from_store(store: Store, job: JobRecord, host: str) -> bool:
    """True where the job's output is read from the store's copy: the store keeps one,
    and the file here is not the one of its last attempt (that ran on another host) or
    is not here at all."""
    if not store.keeps_output:
        return False
    return (job.host is not None and job.host != host) or not Path(job.output).exists()
