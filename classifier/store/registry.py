"""The model registry: which trained head is active, loaded once and cached until another is activated."""

from __future__ import annotations

import threading
from pathlib import Path

from classifier import errors
from classifier.model.heads import Head
from classifier.store.index import Index

__all__ = ["current_head", "forget_cached"]


_cache: dict[str, Head] = {}
_cache_lock = threading.Lock()


def current_head(database: Path) -> Head | None:
    """The active head from the registry in `database` (cached; a newly trained one is picked up on the next call).

    The registry names the head's folder relative to the database's folder (the data folder), so this works
    from any working folder and after the data folder moved.
    """
    if not database.exists():
        return None
    with Index(database) as index:
        row = index.active_model()
    if row is None:
        return None
    with _cache_lock:
        head = _cache.get(row["id"])
        if head is None:
            folder: Path = row["path"]
            if not (folder / "head.json").exists():
                raise errors.NoModel(f"The active model {row['id']} is missing from {folder}; run `spy train` again.")
            head = Head.load(folder)
            _cache.clear()
            _cache[row["id"]] = head
        return head


def forget_cached() -> None:
    """Drop the cached head (after training or removing one), so the next call reads the registry again."""
    with _cache_lock:
        _cache.clear()
