"""Store backends, chosen by URL: ``memory://`` or ``sqlite:///path/to/jobq.db``, each imported when asked for."""

from __future__ import annotations

from urllib.parse import urlsplit

from jobq.store.base import Added, Retention, Store, StoreOptions, StoreStats

__all__ = ["Added", "Retention", "Store", "StoreOptions", "StoreStats", "open_store"]


def open_store(url: str, options: StoreOptions | None = None, **backend_options: object) -> Store:
    """Build the store a URL names; each backend is imported only when asked for."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        from jobq.store.memory import MemoryStore

        return MemoryStore(options)
    if scheme == "sqlite":
        from jobq.store.sqlite import SQLiteStore

        return SQLiteStore(sqlite_path(url), options, **backend_options)  # type: ignore[arg-type]
    raise ValueError(f"unknown store URL {url!r}: use memory:// or sqlite:///path")


def sqlite_path(url: str) -> str:
    """``sqlite:///jobq.db`` is ./jobq.db; ``sqlite:////var/lib/jobq.db`` is absolute."""
    path = url.removeprefix("sqlite://")
    return path[1:] if path.startswith("/") else path
