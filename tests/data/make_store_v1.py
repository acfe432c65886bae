"""How tests/data/store-v1.sqlite3 was made: run at commit 876c6fe (schema 1, before the
store package), from the repository's root. Kept as the record of what the file holds;
it does not run against today's code."""

from pathlib import Path

from bgrun.store import NewJob, Store

PATH = Path("tests/data/store-v1.sqlite3")
T = 1_790_000_000.0


def job(**kw: object) -> NewJob:
    base = dict(target="myapp.tasks", method="add", params_json='{"args": [1, 2]}', priority=0,
                retries=0, timeout=None, run_at=T, cwd="/srv/app", python="/usr/bin/python3",
                env_json='{"A": "1"}', allowlist="/srv/app/bgrun.toml")
    base.update(kw)
    return NewJob(**base)


def main() -> None:
    for p in (PATH, Path(f"{PATH}-wal"), Path(f"{PATH}-shm")):
        p.unlink(missing_ok=True)
    s = Store(PATH, Path("/tmp/out"))
    ids = {}
    ids["completed"], _ = s.insert(job(), T)
    ids["failed"], _ = s.insert(job(method="boom", retries=1), T + 1)
    ids["cancelled"], _ = s.insert(job(method="slow"), T + 2)
    ids["running"], _ = s.insert(job(method="slow", timeout=30.0), T + 3)
    ids["unique"], _ = s.insert(job(unique_key="nightly", priority=5), T + 4)
    ids["scheduled"], _ = s.insert(job(run_at=T + 86400), T + 5)
    ids["held"], _ = s.insert(job(held=-4242), T + 6)
    s.claim_one(ids["completed"], T + 10, 0, 111)
    s.finish(ids["completed"], 1, T + 11, outcome="completed", result_json="3")
    s.claim_one(ids["failed"], T + 12, 1, 111)  # failed once, retried, failed for good
    s.finish(ids["failed"], 1, T + 13, outcome="failed", error="ValueError: no",
             traceback="Traceback...", retry_at=T + 14)
    s.claim_one(ids["failed"], T + 15, 1, 111)
    s.finish(ids["failed"], 2, T + 16, outcome="failed", error="ValueError: no",
             traceback="Traceback...")
    s.cancel(ids["cancelled"], T + 17)
    s.claim_one(ids["running"], T + 18, 0, 222)
    s.set_child(ids["running"], 333, T + 18.5)
    s.close()
    print(ids)


if __name__ == "__main__":
    main()
