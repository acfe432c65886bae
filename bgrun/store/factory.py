"""open_store: the one place that turns settings into a store."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from bgrun.config import SERVER_SCHEMES, Config
from bgrun.errors import StoreError
from bgrun.files import private_dir
from bgrun.store.base import Role, Store


def store_kind(location: str) -> str:
    """`postgresql` for a database URL, else `sqlite` (any other value is a file path)."""
    return "postgresql" if location.lower().startswith(SERVER_SCHEMES) else "sqlite"


def describe_store(config: Config) -> str:
    """Where `config`'s store is, for people: its path, or its URL without the password
    (`postgresql://user@host:port/db`). Reads nothing and needs no driver."""
    if config.store_url is None:
        return str(config.store)
    return describe_url(config.store_url)


def describe_url(url: str) -> str:
    """`postgresql://user@host:port/db` of a database URL: never its password or query."""
    parts = urlsplit(url.split("?", 1)[0])
    login, _, hosts = parts.netloc.rpartition("@")
    user = unquote(login.split(":", 1)[0])
    try:
        host, port = parts.hostname, parts.port
    except ValueError:  # several hosts (h1:5432,h2:5432), or a port that is no number
        host, port = None, None
    if host is None:
        where = hosts or "localhost:5432"
    else:
        where = f"[{host}]" if ":" in host else host
        where += f":{port or 5432}"
    name = unquote(parts.path.lstrip("/")) or user
    return f"postgresql://{f'{user}@' if user else ''}{where}/{name}"


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
    return PgStore(config.store_url, config.log_dir, host=config.host,
                   lease=config.lease_term,
                   notify=config.pg_notify, create=create)
