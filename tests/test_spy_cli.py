"""The operator's command line on bad input: each case a sentence that says what is wrong and what to do, a
non-zero exit, nothing left behind, and the cheap checks done before TensorFlow is imported.

Also `spy about` and YouTube's JavaScript runtime: yt-dlp, run with our options, finds the Deno binary of
the `deno` wheel and the solver scripts of `yt-dlp-ejs`, and runs them, with nothing fetched.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yt_dlp
import yt_dlp.version

from classifier.settings import Settings
from classifier.sources.fetch import base_options
from classifier.store.index import Index
from spy.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]

# Runs several `spy` commands in ONE fresh interpreter, then says whether TensorFlow (or Keras) was imported.
_RUNNER = """
import contextlib, io, json, sys
from spy.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = main(argv)
        except SystemExit as exc:
            rc = exc.code
    results.append({"argv": argv[:3], "rc": rc, "err": err.getvalue()})
print(json.dumps({"results": results, "tf": any(m in sys.modules for m in ("tensorflow", "keras"))}))
"""


def _run_cheap(cases: list[list[str]], cwd: Path, env: dict[str, str]) -> tuple[list[dict], bool]:
    run = subprocess.run([sys.executable, "-c", _RUNNER, json.dumps(cases)], capture_output=True, text=True,
                         cwd=cwd, timeout=300, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **env})
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    return out["results"], out["tf"]


def _enrolled_but_untrained(database: Path) -> None:
    """An index with one artist and no trained model (written directly: no network, no TensorFlow)."""
    with Index(database) as index:
        index.add_track(artist="Deep Pulse", title="a", source="a.wav", duration_s=3.0, content_hash="0" * 64,
                        split=None, backbone="msd_musicnn", hop_s=1.5, starts=np.zeros(1, np.float32),
                        embedding=np.zeros((1, 200), np.float32), pooled=np.zeros((1, 1506), np.float32))


def test_bad_operator_input_gets_a_sentence_before_tensorflow_is_loaded(audio_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    untrained = tmp_path / "untrained"
    untrained.mkdir()
    _enrolled_but_untrained(untrained / "spy.sqlite3")
    manifest = tmp_path / "excel.csv"                     # what a spreadsheet writes as "CSV UTF-8"
    manifest.write_bytes("\ufeffartist,path,split\r\nDeep Pulse,loop.wav,train\r\nIron Riff,gone.wav,train\r\n"
                         .encode("utf-8"))
    (tmp_path / "loop.wav").write_bytes((audio_dir / "loop.wav").read_bytes())
    tone = str(audio_dir / "tone.wav")                   # 8 s
    cases = [
        (["genre", str(audio_dir / "empty.mp3")], 1, "empty.mp3 is empty (0 bytes). Give a file with audio in it."),
        (["genre", str(audio_dir)], 1, "is a folder. Give one audio file"),
        (["identify", str(tmp_path / "missing.mp3")], 1, "I can't find the file 'missing.mp3'. Check the path"),
        (["genre", tone, "--at", "1:00:00"], 1, "tone.wav is 0:08 long, so it has nothing at 1:00:00. Give an "
                                               "--at before 0:08."),
        (["genre", tone, "--at", "0:08"], 1, "nothing at 0:08"),
        (["genre", tone, "--seconds", "0"], 2, "argument --seconds: must be a number of seconds above 0, like 30"),
        (["genre", tone, "--seconds", "-5"], 2, "must be a number of seconds above 0"),
        (["genre", tone, "--seconds", "nan"], 2, "must be a number of seconds above 0"),
        (["genre", tone, "--at", "soon"], 1, "I could not read the time \u201csoon\u201d. Write it like 1:02:03"),
        (["genre", tone, "--at", "9" * 5000], 1, "I could not read the time"),
        (["genre", "a" * 4096], 1, "I can't read"),
        (["genre", "x/" * 2048], 1, "I could not find a YouTube or SoundCloud link"),
        (["identify", "https://x.example/" + "a" * 4096], 1, "characters long; a track link is much shorter"),
        (["identify", "https://x.example/" + "a" * 1000], 1, "I only fetch audio from YouTube and SoundCloud"),
        (["genre", str(audio_dir / "song.mp3")], 1, "does not contain audio I can read"),
        (["genre", "https://www.youtube.com/playlist?list=PL0123456789"], 1, "That is a playlist or a set"),
        (["genre", "https://youtu.be/dQw4w9WgXcQ at 1:00 or 2:00"], 1, "You wrote two different times"),
        (["identify", tone], 1, "No artists are enrolled yet"),
        (["enrol", "--manifest", str(manifest), "--dry-run"], 1, "excel.csv row 3: no such file gone.wav"),
        (["enrol", "Deep Pulse", "https://soundcloud.com/dj/likes", "--dry-run"], 1, "lists other people's tracks"),
        (["enrol", "Deep Pulse", str(tmp_path / "loop.wav"), "--limit", "x"], 2, "must be a whole number of tracks"),
    ]
    results, tf = _run_cheap([argv for argv, _, _ in cases], tmp_path, {"SPY_DATA_DIR": str(data)})
    for (argv, rc, says), got in zip(cases, results):
        assert (got["rc"], says in got["err"]) == (rc, True), (argv[:3], got["err"][-300:])
        assert "Traceback" not in got["err"]
    assert not tf, "every one of these was answered before TensorFlow was imported"
    assert sorted(p.name for p in data.iterdir()) in ([], ["spy.sqlite3"]), "nothing left behind"

    results, tf = _run_cheap([["identify", tone]], tmp_path, {"SPY_DATA_DIR": str(untrained)})
    assert results[0]["rc"] == 1 and not tf
    assert "1 artist(s) are enrolled, but no model is trained yet. Run `spy train`" in results[0]["err"]


def test_a_byte_order_mark_is_not_part_of_the_first_column(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           audio_dir: Path) -> None:
    manifest = tmp_path / "excel.csv"
    manifest.write_bytes(b"\xef\xbb\xbfartist,path\r\nDeep Pulse," + str(audio_dir / "loop.wav").encode() + b"\r\n")
    args = build_parser().parse_args(["enrol", "--manifest", str(manifest), "--dry-run"])
    assert args.func(Settings(data_dir=tmp_path / "data"), args) == 0
    assert "would enrol: excel.csv row 2: Deep Pulse / " in capsys.readouterr().out


def test_the_same_audio_under_another_artist_is_flagged(settings: Settings, audio_dir: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    def enrol(*argv: str) -> int:
        args = build_parser().parse_args(["enrol", *argv])
        return args.func(settings, args)

    assert enrol("Deep Pulse", str(audio_dir / "loop.wav")) == 0
    capsys.readouterr()
    assert enrol("Deep Pulse", str(audio_dir / "loop.wav")) == 0            # a plain duplicate is fine
    assert "1 already in" in capsys.readouterr().out
    assert enrol("Iron Riff", str(audio_dir / "loop.wav")) == 1
    out, err = capsys.readouterr()
    assert "conflict:" in err and "already enrolled as Deep Pulse / loop (track #1), not Iron Riff" in err
    assert "spy forget 1" in err and "1 under another artist" in out
    with Index(settings.database) as index:
        assert [(t.artist, t.title) for t in index.tracks()] == [("Deep Pulse", "loop")]


# --- spy about, and the runtime yt-dlp uses for YouTube -------------------------------------------------------

def test_spy_about_reports_ytdlp_and_the_js_runtime(capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["about", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["ytdlp"]["ytdlp_version"] == yt_dlp.version.__version__
    assert d["ytdlp"]["runtime"] == "deno" and d["ytdlp"]["runtime_ok"] is True
    assert Path(d["ytdlp"]["runtime_path"]).is_file()
    assert d["ytdlp"]["solver_version"] and d["youtube_ready"] is True and d["ffmpeg"]
    assert main(["about"]) == 0
    out = capsys.readouterr().out
    assert f"yt-dlp {yt_dlp.version.__version__}; YouTube challenges: deno " in out and "with yt-dlp-ejs" in out

    monkeypatch.setenv("SPY_JS_RUNTIME_PATH", str(tmp_path / "no-deno-here"))
    assert main(["about"]) == 1
    assert "NO JavaScript runtime (deno not usable at " in capsys.readouterr().out


def test_ytdlp_solves_youtube_challenges_with_the_installed_runtime_and_scripts(tmp_path: Path) -> None:
    """yt-dlp, with our options, picks Deno at the path we give, loads the solver scripts from the yt-dlp-ejs
    package (not from npm or GitHub), and runs them: a JavaScript that is no YouTube player gets the solver's
    own complaint, so the whole chain ran. (This reads yt-dlp's challenge-provider internals; if yt-dlp
    reorganises them, adapt the test, not the product.)"""
    from yt_dlp.extractor.youtube.jsc._builtin.ejs import ScriptSource
    from yt_dlp.extractor.youtube.jsc.provider import JsChallengeProviderError

    settings = Settings(data_dir=tmp_path / "data")
    options = {**base_options(settings, proxy="http://127.0.0.1:9"), "allowed_extractors": ["youtube"]}
    with yt_dlp.YoutubeDL(options) as ydl:
        ie = ydl.get_info_extractor("Youtube")
        ie.initialize()
        deno = ie._jsc_director.providers["Deno"]
        assert deno.is_available()
        assert deno.runtime_info.path == options["js_runtimes"]["deno"]["path"]
        assert deno._lib_script.source is ScriptSource.PYPACKAGE and deno._core_script.source is ScriptSource.PYPACKAGE
        with pytest.raises(JsChallengeProviderError, match="unexpected structure"):
            deno._run_js_runtime(deno._construct_stdin("var notAPlayer = 1;", False, []))
