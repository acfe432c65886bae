"""The durable job store: what every other module may know of it.

`sqlite` is the backend, `schema` its tables and migrations, `rows` the plain data that
crosses the store's boundary. Nothing outside this package writes SQL.
"""

from __future__ import annotations

from bgrun.store.rows import LaunchSpec, NewJob, job_key
from bgrun.store.sqlite import SqliteStore

#: The store every other module is written against (today its one backend).
Store = SqliteStore

__all__ = ["LaunchSpec", "NewJob", "SqliteStore", "Store", "job_key"]
