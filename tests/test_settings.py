"""Settings: typed parsing from the environment and .env, and a complete .env.example."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from classifier.settings import Settings, env_name, load_settings

ROOT = Path(__file__).resolve().parents[1]


def test_env_overrides_dotenv_and_types(tmp_path: Path) -> None:
    dot = tmp_path / ".env"
    dot.write_text("SPY_BATCH_SIZE=8\nexport TELEGRAM_TOKEN='abc:def'\n# comment\nSPY_FETCH_EXTRA_HOSTS=a:1, b:2\n")
    s = load_settings(env={"SPY_BATCH_SIZE": "16", "SPY_DISCORD_MESSAGE_CONTENT": "yes",
                           "SPY_DB_PATH": str(tmp_path / "x.db")}, dotenv=dot)
    assert s.batch_size == 16 and s.telegram_token == "abc:def" and s.discord_message_content is True
    assert s.fetch_extra_hosts == ("a:1", "b:2") and s.database == tmp_path / "x.db"


def test_bad_values_name_the_variable() -> None:
    with pytest.raises(ValueError, match="SPY_BATCH_SIZE"):
        load_settings(env={"SPY_BATCH_SIZE": "many"}, dotenv=None)


def test_tokens_never_in_repr() -> None:
    s = Settings(telegram_token="123:SECRET", discord_token="DSECRET", classifier_token="CSECRET")
    assert "SECRET" not in repr(s)


def test_env_example_documents_every_setting() -> None:
    text = (ROOT / ".env.example").read_text()
    missing = [env_name(f.name) for f in fields(Settings) if f"\n{env_name(f.name)}=" not in text]
    assert missing == []
