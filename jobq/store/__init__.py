"""Store backends, chosen by URL: ``memory://``, ``sqlite:///path/to/jobq.db``, ``postgresql://...`` or
``redis://...``, each imported when asked for.

The URL is parsed strictly: anything but the forms in ``STORE_URL_FORMS`` is refused with
a ``ValueError`` naming them, so a typo never becomes a file with a strange name.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from jobq.store.base import Added, Retention, Store, StoreOptions, StoreStats

__all__ = [
    "STORE_URL_FORMS",
    "Added",
    "Retention",
    "Store",
    "StoreOptions",
    "StoreStats",
    "open_store",
    "sqlite_path",
    "without_password",
]

STORE_URL_FORMS = (
    "memory://, sqlite:///relative/path, sqlite:////absolute/path, postgresql://user@host:5432/db[?schema=jobq] "
    "or redis://[user:password@]host:6379/0[?prefix=jobq]"
)


def open_store(url: str, options: StoreOptions | None = None, **backend_options: object) -> Store:
    """Build the store a URL names; each backend is imported only when asked for."""
    scheme = store_scheme(url)
    if scheme == "memory":
        from jobq.store.memory import MemoryStore

        return MemoryStore(options)
    if scheme == "postgresql":
        from jobq.store.postgres import PostgresStore

        return PostgresStore(url, options)
    if scheme == "redis":
        from jobq.store.redis import RedisStore

        return RedisStore(url, options)
    from jobq.store.sqlite import SQLiteStore

    return SQLiteStore(sqlite_path(url), options, **backend_options)  # type: ignore[arg-type]


def without_password(url: str) -> str:
    """A store URL as logs may show it: a password in it (``redis://user:secret@host``) becomes ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def store_scheme(url: str) -> str:
    """The backend (``memory``, ``sqlite``, ``postgresql``, ``redis``) of a valid store URL; ValueError otherwise."""
    if url == "memory://":
        return "memory"
    if urlsplit(url).scheme in ("postgresql", "postgres"):
        return "postgresql"
    if urlsplit(url).scheme in ("redis", "rediss"):
        return "redis"
    if url.startswith("sqlite:"):
        sqlite_path(url)
        return "sqlite"
    if urlsplit(url).scheme == "memory":
        raise ValueError(f"store URL {url!r} is not valid: memory:// takes nothing after it; use {STORE_URL_FORMS}")
    raise ValueError(f"unknown store URL {url!r}: use {STORE_URL_FORMS}")


def sqlite_path(url: str) -> str:
    """The file a ``sqlite:`` URL names: ``sqlite:///jobq.db`` is ./jobq.db; ``sqlite:////var/lib/jobq.db`` is absolute.

    Refused (ValueError naming the accepted forms): no ``//`` after the scheme (``sqlite:jobq.db``),
    a host (``sqlite://host/jobq.db``), a query or fragment, and an empty file path.
    """

    def refuse(why: str) -> ValueError:
        return ValueError(f"store URL {url!r} is not valid: {why}; use {STORE_URL_FORMS}")

    if not url.startswith("sqlite://"):
        path = url.removeprefix("sqlite:") or "jobq.db"
        raise refuse(f"a sqlite URL is sqlite:// and then the path (sqlite:///{path}, say)")
    if "?" in url or "#" in url:
        raise refuse("sqlite URLs take no query or fragment")
    rest = url.removeprefix("sqlite://")
    if not rest:
        raise refuse("it has no file path")
    if not rest.startswith("/"):
        host = rest.split("/")[0]
        raise refuse(f"it names a host ({host!r}), and sqlite URLs have none: a path follows sqlite:/// (3 slashes)")
    path = rest[1:]
    if not path or path.endswith("/"):
        raise refuse("it has no file path (a file name, not a directory)")
    return path
