"""`spy eval`: trains on split=train only, queries split=test, never touches the operator's index."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from spy import cli


def _manifest(tmp_path: Path, demo_lib: dict[str, list[Path]]) -> Path:
    heldout = next(iter(demo_lib.values()))[0].parent.parent / "heldout"
    rows = []
    for artist, paths in demo_lib.items():
        rows += [{"artist": artist, "path": str(p), "split": "train"} for p in paths]
        rows.append({"artist": artist, "path": str(heldout / f"{artist.lower().replace(' ', '-')}.wav"),
                     "split": "test"})
    # the same bytes as a training file under another name, listed as a test track: must not be tested
    leak = tmp_path / "renamed-copy.wav"
    shutil.copyfile(demo_lib["Iron Riff"][0], leak)
    rows.append({"artist": "Iron Riff", "path": str(leak), "split": "test"})
    rows.append({"artist": "Slow Tide", "path": str(tmp_path / "missing.wav"), "split": "test"})
    path = tmp_path / "manifest.csv"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["artist", "path", "split"])
        w.writeheader()
        w.writerows(rows)
    return path


def _no_nan(token: str) -> float:
    raise AssertionError(f"{token} is not JSON")


def test_eval_json_on_a_generated_split(tmp_path: Path, demo_lib, monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
                                        capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "operator-data"
    monkeypatch.setenv("SPY_DATA_DIR", str(data))
    monkeypatch.chdir(tmp_path)
    manifest = _manifest(tmp_path, demo_lib)
    png = tmp_path / "confusion.png"
    assert cli.main(["eval", "--manifest", str(manifest), "--query-seconds", "10", "--json",
                     "--confusion", str(png)]) == 0
    out = json.loads(capsys.readouterr().out, parse_constant=_no_nan)
    for key in ("top1", "top5", "macro_top1", "slice_top1", "n_artists", "n_test_tracks", "seconds"):
        assert key in out
    assert out["n_artists"] == 3
    # three held-out tracks are queried; the renamed copy of a training file and the missing file are not
    assert out["n_test_tracks"] == 3
    problems = "\n".join(out["problems"])
    assert "row 11: renamed-copy.wav is the same audio file as a training row" in problems
    assert "missing.wav" in problems
    # the procedural artists are easy: every held-out track is named, with three artists top-5 is trivial
    assert out["top1"] == 1.0 and out["macro_top1"] == 1.0
    assert 0.5 < out["slice_top1"] <= 1.0
    assert {p["artist"] for p in out["per_artist"]} == set(demo_lib)
    assert png.stat().st_size > 1000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # every test track is also queried once by a head that never saw its artist (three heads, one artist
    # left out of each), so the non-enrolled rate rests on all three queries, not on one artist's
    assert out["n_unknown"] == 3
    assert 0.0 <= out["unknown_false_accept"] <= 1.0
    # evaluation works in its own temporary index: the operator's data directory is never created
    assert not data.exists()


def test_eval_needs_both_splits(tmp_path: Path, demo_lib, monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SPY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "only-train.csv"
    path.write_text("artist,path,split\n" + "".join(f"{a},{p},train\n" for a, ps in demo_lib.items() for p in ps))
    assert cli.main(["eval", "--manifest", str(path), "--json"]) == 1
    assert "split=train and split=test" in capsys.readouterr().err


def test_eval_seed_cnn_same_protocol(tmp_path: Path, demo_lib, monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SPY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    manifest = _manifest(tmp_path, demo_lib)
    assert cli.main(["eval", "--manifest", str(manifest), "--arch", "seedcnn", "--epochs", "2", "--query-seconds",
                     "10", "--json", "--confusion", str(tmp_path / "c.png")]) == 0
    out = json.loads(capsys.readouterr().out, parse_constant=_no_nan)
    assert out["n_artists"] == 3 and out["n_test_tracks"] == 3
    # the seed CNN has no "I don't know" threshold: its rates are null (valid JSON), not NaN
    assert out["false_accept"] is None and out["unknown_false_accept"] is None
    assert any("renamed-copy.wav is the same audio file" in p for p in out["problems"])
    # with three artists every true artist is in the top 5, per artist too
    assert out["top5"] == 1.0 and all(p["top5"] == 1.0 for p in out["per_artist"])
    assert 0.0 <= out["top1"] <= 1.0
