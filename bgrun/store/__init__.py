"""The durable job store: the contract every module is written against, and its backends.

- `base`: the contract (`Store`, a Protocol whose every method says what it takes,
  returns, raises and keeps atomic) and `Role`;
- `factory`: `open_store(config, role)`, the one place that picks a backend;
- `sqlite` (with `connect`, `schema`, `sql`): the SQLite backend;
- `rows`: the plain data that crosses the boundary, and rows read by column name.

Nothing outside this package writes SQL or knows a column (tests/test_architecture.py).
"""

from __future__ import annotations

from bgrun.store.base import Role, Store
from bgrun.store.factory import open_store, store_kind
from bgrun.store.rows import LaunchSpec, NewJob, RunningAttempt, job_key

__all__ = ["LaunchSpec", "NewJob", "Role", "RunningAttempt", "Store", "job_key", "open_store",
           "store_kind"]
