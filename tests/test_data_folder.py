"""The operator's data folder: `spy` works from any working folder, and the data folder can be moved.

The registry stores a head's folder relative to the data folder (the database's folder); databases written
before that, with absolute or working-folder-relative paths, keep working.
"""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from classifier import errors
from classifier.settings import Settings
from classifier.store import registry
from classifier.store.index import Index, resolve_model_path, stored_model_path
from spy import cli


@pytest.fixture()
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An unrelated working folder (no .env, no data/), and no SPY_ variables from the shell."""
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    for name in ("SPY_DATA_DIR", "SPY_DB_PATH", "CLASSIFIER_URL"):
        monkeypatch.delenv(name, raising=False)
    registry.forget_cached()          # the head cache would hide a registry that points nowhere
    yield cwd
    registry.forget_cached()


def _registered_path(database: Path) -> str:
    with sqlite3.connect(database) as conn:
        return conn.execute("SELECT path FROM models WHERE active = 1").fetchone()[0]


def _identify(source: Path, capsys: pytest.CaptureFixture[str]) -> dict:
    capsys.readouterr()
    assert cli.main(["identify", str(source), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _heldout(demo_lib: dict[str, list[Path]]) -> Path:
    return next(iter(demo_lib.values()))[0].parent.parent / "heldout" / "iron-riff.wav"


def test_registry_paths_are_relative_to_the_data_folder(trained: Settings) -> None:
    stored = _registered_path(trained.database)
    assert not Path(stored).is_absolute() and stored.startswith("models/head-")
    with Index(trained.database) as index:
        assert index.active_model()["path"] == trained.heads_dir / Path(stored).name


@pytest.fixture(scope="module")
def trained_here(trained: Settings, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`spy train` run in a working folder with the old default, a relative SPY_DATA_DIR=data (the enrolled
    index is a copy of `trained`'s, without its heads). Returns that data folder."""
    work = tmp_path_factory.mktemp("work")
    shutil.copytree(trained.data_dir, work / "data", ignore=shutil.ignore_patterns("models"))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        mp.setenv("SPY_DATA_DIR", "data")
        for name in ("SPY_DB_PATH", "CLASSIFIER_URL"):
            mp.delenv(name, raising=False)
        assert cli.main(["train", "--epochs", "30"]) == 0
    registry.forget_cached()
    assert _registered_path(work / "data" / "spy.sqlite3").startswith("models/head-")
    return work / "data"


def test_spy_identify_from_another_folder_finds_the_trained_model(
        trained_here: Path, demo_lib: dict[str, list[Path]], elsewhere: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SPY_DATA_DIR", str(trained_here))
    answer = _identify(_heldout(demo_lib), capsys)
    assert answer["artists"][0]["name"] == "Iron Riff" and answer["model"]["artists"] == 3
    assert list(elsewhere.iterdir()) == []                 # nothing created in the working folder


def test_moved_data_folder_keeps_the_model_working(
        trained_here: Path, demo_lib: dict[str, list[Path]], elsewhere: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    moved = tmp_path / "moved" / "spy-data"
    moved.parent.mkdir()
    trained_here.rename(moved)                             # where the head was trained is gone...
    try:
        monkeypatch.setenv("SPY_DATA_DIR", str(moved))
        head = registry.current_head(Settings(data_dir=moved).database)
        assert head is not None and head.labels == ("Deep Pulse", "Iron Riff", "Slow Tide")
        registry.forget_cached()
        answer = _identify(_heldout(demo_lib), capsys)
        assert answer["artists"][0]["name"] == "Iron Riff" and answer["model"]["id"] == head.id
    finally:
        moved.rename(trained_here)                         # ...until the next test of this module wants it


def test_spy_artists_without_a_data_dir_uses_the_per_user_folder(
        elsewhere: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    assert cli.main(["artists"]) == 0
    assert "No artists enrolled yet" in capsys.readouterr().out
    assert list(elsewhere.iterdir()) == []                 # no ./data/spy.sqlite3 where it ran
    assert (home / ".local" / "share" / "deep-house-spy" / "spy.sqlite3").is_file()


# --- databases written before the paths were relative to the data folder ------------------------------------------

def _rewrite_path(database: Path, path: str) -> None:
    with sqlite3.connect(database) as conn:
        conn.execute("UPDATE models SET path = ? WHERE active = 1", (path,))


def test_old_working_folder_relative_path_still_works_from_that_folder(
        trained: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The old default: SPY_DATA_DIR=data, and the registry said `data/models/<id>` (relative to the cwd)."""
    work = tmp_path / "work"
    shutil.copytree(trained.data_dir, work / "data")
    head_id = Path(_registered_path(trained.database)).name
    database = work / "data" / "spy.sqlite3"
    _rewrite_path(database, f"data/models/{head_id}")
    monkeypatch.chdir(work)
    registry.forget_cached()
    with caplog.at_level(logging.WARNING, logger="classifier.store.index"):
        head = registry.current_head(database)
    assert head is not None and head.id == head_id
    assert "relative to the working folder" in caplog.text
    registry.forget_cached()
    monkeypatch.chdir(tmp_path)                            # elsewhere, that old path cannot be found
    with pytest.raises(errors.NoModel, match="missing"):
        registry.current_head(database)
    registry.forget_cached()


def test_old_absolute_path_still_works(trained: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(trained.data_dir, copy)
    head_id = Path(_registered_path(trained.database)).name
    _rewrite_path(copy / "spy.sqlite3", str(copy / "models" / head_id))
    monkeypatch.chdir(tmp_path)
    registry.forget_cached()
    head = registry.current_head(copy / "spy.sqlite3")
    assert head is not None and head.id == head_id
    registry.forget_cached()


def test_stored_and_resolved_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = tmp_path / "data"
    (base / "models" / "h1").mkdir(parents=True)
    assert stored_model_path(base / "models" / "h1", base) == "models/h1"
    assert stored_model_path(tmp_path / "other" / "h2", base) == str(tmp_path / "other" / "h2")   # outside: absolute
    monkeypatch.chdir(base)
    assert stored_model_path(Path("models/h1"), base) == "models/h1"        # a relative folder means the cwd's
    assert resolve_model_path("models/h1", base) == base / "models" / "h1"
    assert resolve_model_path(str(tmp_path / "x"), base) == tmp_path / "x"
    # relative and nowhere: the data folder's meaning (so the error names where it should be)
    monkeypatch.chdir(tmp_path)
    assert resolve_model_path("models/gone", base) == base / "models" / "gone"
