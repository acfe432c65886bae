"""open_store: the one place that turns settings into a store."""

from __future__ import annotations

from bgrun.config import SERVER_SCHEMES, Config
from bgrun.errors import StoreError
from bgrun.files import private_dir
from bgrun.store.base import Role, Store


def store_kind(location: str) -> str:
    """`postgresql` for a database URL, else `sqlite` (any other value is a file path)."""
    return "postgresql" if location.lower().startswith(SERVER_SCHEMES) else "sqlite"


def open_store(config: Config, role: Role = Role.CALLER, *, create: bool = True) -> Store:
    """The store `config` names, open, its schema made or migrated.

    `role` lets the backend choose its durability (base.Role). Raises StoreError when
    the store cannot be opened or used; nothing is written then. `create=False`: a
    missing store is NoStoreError, and nothing is made (commands that only read).
    """
    kind = "sqlite" if config.store_url is None else store_kind(config.store_url)
    if kind == "sqlite":
        from bgrun.store.sqlite import SqliteStore

        if create:
            private_dir(config.store.parent)
        return SqliteStore(config.store, config.log_dir, role, create=create, host=config.host)
    return _open_postgresql(config, create)


def _open_postgresql(config: Config, create: bool) -> Store:
    """The PostgreSQL store (psycopg imported only now: SQLite users never load it)."""
    assert config.store_url is not None
    try:
        from bgrun.store.pg import PgStore
    except ImportError as exc:
        if exc.name is None or not exc.name.startswith("psycopg"):
            raise
        raise StoreError("BGRUN_STORE names a PostgreSQL database, but psycopg is not"
                         " installed: pip install 'bgrun[postgres]'") from None
    return PgStore(config.store_url, config.log_dir, host=config.host, lease=config.lease,
                   notify=config.pg_notify, create=create)
