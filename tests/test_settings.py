"""Settings: typed parsing from the environment and .env (pydantic-settings), secrets, paths, .env.example."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from classifier.logs import quiet_secrets
from classifier.settings import (
    Settings,
    SettingsError,
    default_data_dir,
    env_name,
    load_settings,
)

ROOT = Path(__file__).resolve().parents[1]
FIELDS = tuple(Settings.model_fields)


def test_env_overrides_dotenv_and_types(tmp_path: Path) -> None:
    dot = tmp_path / ".env"
    dot.write_text("SPY_BATCH_SIZE=8\nexport TELEGRAM_TOKEN='abc:def'\n# comment\nSPY_FETCH_EXTRA_HOSTS=a:1, b:2\n"
                   "SPY_MAX_CLIP_SECONDS=45\n")
    s = load_settings(env={"SPY_BATCH_SIZE": "16", "SPY_DISCORD_MESSAGE_CONTENT": "yes",
                           "SPY_DB_PATH": str(tmp_path / "x.db")}, dotenv=dot)
    assert s.batch_size == 16 and s.discord_message_content is True and s.max_clip_seconds == 45.0
    assert s.telegram_token.get_secret_value() == "abc:def"
    assert s.fetch_extra_hosts == ("a:1", "b:2") and s.database == tmp_path / "x.db"


def test_overrides_win_over_environment_and_dotenv(tmp_path: Path) -> None:
    dot = tmp_path / ".env"
    dot.write_text("SPY_BATCH_SIZE=8\nCLASSIFIER_URL=http://dotenv:1\n")
    s = load_settings(env={"SPY_BATCH_SIZE": "16", "CLASSIFIER_URL": "http://env:2"}, dotenv=dot, batch_size=4,
                      classifier_url="http://override:3")
    assert (s.batch_size, s.classifier_url) == (4, "http://override:3")


def test_unprefixed_names_are_the_only_names_for_those_settings() -> None:
    s = load_settings(env={"SPY_TELEGRAM_TOKEN": "wrong", "SPY_CLASSIFIER_URL": "http://wrong",
                           "TELEGRAM_TOKEN": "1:right", "CLASSIFIER_URL": "http://right", "TELEGRAM_LOCAL_MODE": "1",
                           "BATCH_SIZE": "3"}, dotenv=None)
    assert s.telegram_token.get_secret_value() == "1:right" and s.classifier_url == "http://right"
    assert s.telegram_local_mode is True and s.batch_size == 32
    alone = load_settings(env={"SPY_TELEGRAM_TOKEN": "1:wrong", "SPY_DISCORD_TOKEN": "wrong", "DATA_DIR": "/x"},
                          dotenv=None)
    assert alone == Settings()


def test_empty_values_mean_the_default_and_unknown_variables_are_ignored(tmp_path: Path) -> None:
    """.env.example's `SPY_DB_PATH=`, and variables docker compose reads from the same .env file."""
    dot = tmp_path / ".env"
    dot.write_text("SPY_DB_PATH=\nSPY_DATA_DIR=\nSPY_CLASSIFIER_CPUS=2\nCOMPOSE_PROJECT_NAME=spy\n"
                   "BATCH_SIZE=3\nLOG_LEVEL=DEBUG\nSPY_TELEGRAM_TOKEN=1:wrong\n")
    s = load_settings(env={"SPY_BATCH_SIZE": "", "SPY_TF_EXTRA": "gpu"}, dotenv=dot)
    assert s.db_path is None and s.data_dir == default_data_dir() and s.batch_size == 32
    assert s.log_level == "INFO" and s.telegram_token.get_secret_value() == ""


def test_missing_dotenv_is_no_error(tmp_path: Path) -> None:
    assert load_settings(env={}, dotenv=tmp_path / "absent.env") == Settings()


@pytest.mark.parametrize(("env", "line"), [
    ({"SPY_MAX_CLIP_SECONDS": "abc"},
     "SPY_MAX_CLIP_SECONDS: input should be a valid number, unable to parse string as a number (got 'abc')"),
    ({"SPY_BATCH_SIZE": "many"},
     "SPY_BATCH_SIZE: input should be a valid integer, unable to parse string as an integer (got 'many')"),
    ({"TELEGRAM_LOCAL_MODE": "perhaps"},
     "TELEGRAM_LOCAL_MODE: input should be a valid boolean, unable to interpret input (got 'perhaps')"),
])
def test_a_bad_value_is_one_line_that_names_the_variable(env: dict[str, str], line: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(env=env, dotenv=None)
    assert str(info.value) == line and isinstance(info.value, ValueError)


def test_every_bad_variable_gets_its_own_line(tmp_path: Path) -> None:
    dot = tmp_path / ".env"
    dot.write_text("SPY_SERVE_PORT=http\n")
    with pytest.raises(SettingsError) as info:
        load_settings(env={"SPY_BATCH_SIZE": "x", "SPY_FETCH_TIMEOUT_S": "soon"}, dotenv=dot)
    lines = str(info.value).splitlines()
    assert sorted(line.split(":")[0] for line in lines) == ["SPY_BATCH_SIZE", "SPY_FETCH_TIMEOUT_S", "SPY_SERVE_PORT"]


def test_cli_prints_the_bad_variable_and_exits_2(tmp_path: Path) -> None:
    """The real `spy` entry point, in a clean process: exit code 2 and the one-line message on stderr."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SPY_MAX_CLIP_SECONDS": "abc"}
    proc = subprocess.run([sys.executable, "-m", "spy.cli", "artists"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == ("spy: SPY_MAX_CLIP_SECONDS: input should be a valid number, unable to parse "
                                   "string as a number (got 'abc')")
    assert not (tmp_path / "data").exists()


def test_tokens_never_in_repr_str_dump_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    s = load_settings(env={"TELEGRAM_TOKEN": "123:SECRET", "DISCORD_TOKEN": "DSECRET", "CLASSIFIER_TOKEN": "CSECRET"},
                      dotenv=None)
    assert {type(getattr(s, f)) for f in ("telegram_token", "discord_token", "classifier_token")} == {SecretStr}
    for text in (repr(s), str(s), str(s.model_dump()), s.model_dump_json()):
        assert "SECRET" not in text
    # a log line that prints the settings, or quotes a token, comes out clean
    redact = quiet_secrets(s, handlers=[caplog.handler])
    try:
        logging.getLogger("test").warning("settings %r, token %s", s, s.telegram_token.get_secret_value())
    finally:
        caplog.handler.removeFilter(redact)
    assert "SECRET" not in caplog.text and "<token>" in caplog.text
    # a bad token value is never echoed back in the error
    with pytest.raises(SettingsError) as info:
        load_settings(env={}, dotenv=None, telegram_token=12345)    # not a string at all
    assert str(info.value) == "TELEGRAM_TOKEN: input should be a valid string"


def test_secret_fields_are_the_tokens() -> None:
    secrets = {env_name(n) for n, f in Settings.model_fields.items() if f.annotation is SecretStr}
    assert secrets == {"TELEGRAM_TOKEN", "DISCORD_TOKEN", "CLASSIFIER_TOKEN"}
    assert all(bool(getattr(Settings(), env.lower())) is False for env in secrets)
    assert bool(Settings(discord_token="x").discord_token) is True


def test_frozen_and_replace_validates() -> None:
    s = Settings(batch_size=8)
    with pytest.raises(ValueError, match="frozen"):
        s.batch_size = 9  # type: ignore[misc]
    t = s.replace(batch_size="16", data_dir="relative/dir", telegram_token="1:t")
    assert t.batch_size == 16 and t.data_dir == Path.cwd() / "relative" / "dir" and t.data_dir.is_absolute()
    assert t.telegram_token.get_secret_value() == "1:t" and s.batch_size == 8 and s.telegram_token.get_secret_value() == ""
    with pytest.raises(ValueError, match="batch_sise"):
        s.replace(batch_sise=3)                      # a misspelt setting is an error, not silently ignored


def test_settings_built_in_code_do_not_read_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SPY_BATCH_SIZE", "3")
    monkeypatch.setenv("TELEGRAM_TOKEN", "1:from-the-shell")
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("SPY_MAX_CLIP_SECONDS=7\n")
    assert Settings().batch_size == 32 and Settings().telegram_token.get_secret_value() == ""
    loaded = load_settings()
    assert (loaded.batch_size, loaded.max_clip_seconds) == (3, 7.0)


def test_data_folder_is_absolute_and_expanded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    s = load_settings(env={"SPY_DATA_DIR": "~/spydata", "SPY_DB_PATH": "db/x.sqlite3"}, dotenv=None)
    assert s.data_dir == tmp_path / "spydata" and s.database == tmp_path / "db" / "x.sqlite3"
    assert s.heads_dir == tmp_path / "spydata" / "models"
    default = load_settings(env={}, dotenv=None)
    assert default.data_dir == default_data_dir() and default.data_dir.is_absolute()
    assert default.database == default.data_dir / "spy.sqlite3" and "deep-house-spy" in str(default.data_dir)


# --- .env.example -----------------------------------------------------------------------------------------------

def _example() -> dict[str, tuple[str, list[str]]]:
    """Each variable in .env.example: (value, the comment lines of its block)."""
    out: dict[str, tuple[str, list[str]]] = {}
    comments: list[str] = []
    for raw in (ROOT / ".env.example").read_text().splitlines():
        line = raw.strip()
        if not line:
            comments = []
        elif line.startswith("#"):
            comments = [] if line.startswith("# ---") else comments + [line]
        else:
            key, _, value = line.partition("=")
            out[key] = (value, comments)
    return out


def test_env_example_documents_every_setting() -> None:
    example = _example()
    missing = [env_name(name) for name in FIELDS if env_name(name) not in example]
    assert missing == []
    assert set(example) == {env_name(name) for name in FIELDS}, "a variable that is not a setting"
    undocumented = [name for name, (_, comments) in example.items() if not comments]
    assert undocumented == [], "each setting (or group of settings) needs a comment saying what it is for"


def test_env_example_values_are_the_defaults() -> None:
    """Copying .env.example to .env changes nothing: every value in it is the default (empty: the default)."""
    from_example, default = load_settings(env={}, dotenv=ROOT / ".env.example"), Settings()
    differ = [env_name(n) for n in FIELDS if getattr(from_example, n) != getattr(default, n)]
    assert differ == [] and from_example == default
    assert len(_example()) == len(FIELDS)

