"""Typed operational settings, read once from the environment and an optional `.env` file (pydantic-settings).

DSP parameters are *not* here: they belong to the model (`models/<name>/params.json`) because they
must match training. Everything here is operational: paths, tokens, limits, URLs. Every limit carries
its unit in its name and has a default; `.env.example` documents each one.

Two ways to get a `Settings`:

- `load_settings()`, called once by each `__main__`: `.env` (lowest), then the environment, then explicit
  overrides (highest). A bad value raises `SettingsError`, one line per bad variable, naming the variable.
- `Settings(**values)` / `settings.replace(**changes)`: the defaults plus exactly what is given. It never reads
  the environment, so tests and library code that build one are not changed by the shell they run in (a
  developer's TELEGRAM_TOKEN or SPY_FETCH_PROXY_URL must not leak into a test).

Paths are made absolute when the settings are built (`data_dir`, `db_path`), so the working folder of the
process no longer matters after that: `spy` run from any folder uses the same data folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Mapping

import platformdirs
from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    EnvSettingsSource,
    NoDecode,
    SettingsConfigDict,
)

__all__ = ["Settings", "SettingsError", "default_data_dir", "env_name", "load_settings"]

APP_NAME = "deep-house-spy"

_ENV_PREFIX = "SPY_"
# Variables the issues name without our prefix (shared with other tools and with docker compose).
_UNPREFIXED = ("classifier_url", "classifier_token", "telegram_token", "telegram_base_url",
               "telegram_base_file_url", "telegram_local_mode", "discord_token")


def _unprefixed(default: Any, name: str) -> Any:
    # A validation alias is the variable's whole name: pydantic-settings then leaves the SPY_ prefix off. The
    # field's own name is the other choice, so Settings(telegram_token=...) works; both are the same name to the
    # case-insensitive environment source, and SPY_TELEGRAM_TOKEN is no name at all (populate_by_name would add it).
    return Field(default=default, validation_alias=AliasChoices(name, name.upper()))


def default_data_dir() -> Path:
    """The per-user data folder (Linux: ~/.local/share/deep-house-spy), used when SPY_DATA_DIR is not set."""
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


class SettingsError(ValueError):
    """One or more settings have a value that cannot be used; the message has one line per variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=_ENV_PREFIX,
        frozen=True,                 # built once and passed down; `replace` makes a changed copy
        extra="forbid",              # a misspelt keyword (`replace(batch_sise=...)`) is an error, not ignored
        env_ignore_empty=True,       # `SPY_DB_PATH=` (as in .env.example) means "the default", not ""
    )

    # --- storage -------------------------------------------------------------------------------
    data_dir: Path = Field(default_factory=default_data_dir)
    """Where the embedded default keeps its SQLite index and trained artist models. Made absolute at load."""
    db_path: Path | None = None
    """SQLite file (index, model registry, history). Default: `<data_dir>/spy.sqlite3`."""

    # --- audio limits ----------------------------------------------------------------------------
    max_audio_seconds: float = 4 * 3600.0
    """Longest audio decoded at all (a 3-hour DJ set fits; a 6-hour file is refused)."""
    min_audio_seconds: float = 3.0
    """Shortest audio analysed: one full 3-s network patch."""
    decode_timeout_s: float = 300.0
    """Wall-clock limit for one ffmpeg decode."""
    silence_dbfs: float = -60.0
    """Clips whose RMS level is below this are answered 'silent' instead of guessed at."""
    max_clip_seconds: float = 120.0
    """Longest clip the bots and the service analyse per request (files are cut to this window)."""
    slice_hop_seconds: float = 3.0
    """Hop between 3-s analysis windows for `genre`/`identify` (3.0 = no overlap)."""
    batch_size: int = 32
    """Patches per network call; fixed so the compiled graph is reused."""

    # --- fetching (yt-dlp) -----------------------------------------------------------------------
    fetch_window_seconds: float = 30.0
    """How much audio a link fetch downloads around the requested time."""
    fetch_timeout_s: float = 60.0
    """Wall-clock limit per fetch; after it the job is abandoned and its files removed."""
    max_fetch_bytes: int = 50 * 1024 * 1024
    """Hard cap on bytes downloaded per fetch (yt-dlp ignores max_filesize for sections)."""
    max_media_seconds: float = 6 * 3600.0
    """Refuse media longer than this (and all live streams)."""
    max_concurrent_fetches: int = 2
    """Fetches running at once per process."""
    # NoDecode: the variable is a comma-separated list (`a:1, b:2`), not the JSON pydantic-settings expects.
    fetch_extra_hosts: Annotated[tuple[str, ...], NoDecode] = ()
    """Extra `host:port` media hosts allowed (generic extractor only for these). Env: SPY_FETCH_EXTRA_HOSTS."""
    fetch_proxy_url: str = ""
    """Upstream `http://host:port` proxy for YouTube/SoundCloud fetches (extra hosts stay direct); empty = direct.
    Every fetch already runs through a per-job loopback proxy that enforces the host allowlist and byte cap;
    this is where that proxy forwards to. Env: SPY_FETCH_PROXY_URL."""

    # --- classifier service / client ----------------------------------------------------------
    classifier_url: str = _unprefixed("", "classifier_url")
    """If set, bots and CLI call this remote classifier instead of running the model in-process."""
    classifier_token: SecretStr = _unprefixed(SecretStr(""), "classifier_token")
    """Bearer token the service requires and the clients send."""
    classifier_timeout_s: float = 120.0
    """Client-side timeout for one remote classify call."""
    serve_host: str = "127.0.0.1"
    serve_port: int = 8080
    max_body_bytes: int = 25 * 1024 * 1024
    """Largest request body the service accepts (413 above)."""
    max_batch_size: int = 64
    """Most patches the service's model worker puts in one batch."""
    max_batch_wait_ms: float = 10.0
    """How long the model worker waits to fill a batch."""
    max_queue_jobs: int = 32
    """Jobs waiting in the service; past it requests get 429 with Retry-After."""
    request_deadline_s: float = 90.0
    """Per-request deadline in the service."""
    max_concurrent_decodes: int = 2
    """Decode/feature jobs running at once (thread pool size)."""
    tfserving_url: str = ""
    """If set (e.g. http://tfserving:8501), the service sends its batches to TensorFlow Serving (`spy export`)."""
    tfserving_timeout_s: float = 30.0
    """Timeout for one TensorFlow Serving predict call."""

    # --- bots --------------------------------------------------------------------------------------
    # Tokens are SecretStr: repr/str/model_dump show '**********'; read them with `.get_secret_value()`.
    telegram_token: SecretStr = _unprefixed(SecretStr(""), "telegram_token")
    telegram_base_url: str = _unprefixed("https://api.telegram.org/bot", "telegram_base_url")
    telegram_base_file_url: str = _unprefixed("https://api.telegram.org/file/bot", "telegram_base_file_url")
    telegram_local_mode: bool = _unprefixed(False, "telegram_local_mode")
    discord_token: SecretStr = _unprefixed(SecretStr(""), "discord_token")
    discord_dev_guild_id: int = 0
    """If set, slash commands sync to this guild only (instant, for development)."""
    discord_message_content: bool = False
    """Read links pasted in ordinary messages (needs the privileged message-content intent)."""
    max_file_bytes: int = 20 * 1024 * 1024
    """Largest file the bots download (the cloud Bot API's own limit is 20 MB)."""
    user_requests_per_minute: int = 5
    max_jobs_per_chat: int = 2
    max_jobs_total: int = 4
    history_retention_days: int = 365

    # --- logging -----------------------------------------------------------------------------------
    log_level: str = "INFO"

    # --- links & artist pages ---
    max_message_chars: int = 8192
    """Longest chat message or command text the link parser reads; longer is refused before any parsing."""
    js_runtime_path: str = ""
    """The Deno binary (or its folder) yt-dlp runs YouTube's JavaScript challenge solver with.
    Empty: the one the `deno` package installed next to Python. Env: SPY_JS_RUNTIME_PATH."""
    enrol_page_limit: int = 20
    """Tracks `spy enrol ARTIST PAGE` enrols from an artist page, newest first, when --limit is not given."""
    enrol_windows: int = 3
    """Windows fetched from each track of an artist page, spread over the track (not the whole file)."""
    enrol_window_seconds: float = 30.0
    """Length of each of those windows."""
    enrol_page_max_entries: int = 500
    """Most entries listed from one artist page (the listing is sorted newest first before --limit applies)."""


    @field_validator("data_dir", "db_path", mode="after")
    @classmethod
    def _absolute(cls, path: Path | None) -> Path | None:
        # abspath, not resolve(): normalised against the working folder now, symlinks left as the operator named them
        return None if path is None else Path(os.path.abspath(path.expanduser()))

    @field_validator("fetch_extra_hosts", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: Any, env_settings: Any,
                                   dotenv_settings: Any, file_secret_settings: Any) -> tuple[Any, ...]:
        # Only the given values: the environment and .env are read by `load_settings` (see the module docstring).
        return (init_settings,)

    @property
    def database(self) -> Path:
        return self.db_path if self.db_path is not None else self.data_dir / "spy.sqlite3"

    @property
    def heads_dir(self) -> Path:
        """Trained artist models (versioned artifacts)."""
        return self.data_dir / "models"

    def replace(self, **changes: Any) -> "Settings":
        """A copy with `changes` applied, validated like the original (so `data_dir="x"` becomes a Path)."""
        values = {name: getattr(self, name) for name in type(self).model_fields}
        return type(self)(**{**values, **changes})


def env_name(field_name: str) -> str:
    """The environment variable that sets `field_name`."""
    return field_name.upper() if field_name in _UNPREFIXED else _ENV_PREFIX + field_name.upper()


# Keys a settings source may hand back (field names, and the variable names of the unprefixed ones), in any case.
_FIELD_OF = {key.lower(): name for name in Settings.model_fields for key in (name, env_name(name))}


class _Environ(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping instead of `os.environ`."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str | None]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        # The hook pydantic-settings' own DotEnvSettingsSource overrides; same normalisation as its os.environ reader.
        return {(key if self.case_sensitive else key.lower()): value for key, value in self._environ.items()
                if not (self.env_ignore_empty and not value)}


def _fields_from(values: Mapping[str, Any]) -> dict[str, Any]:
    """A source's values keyed by field name (it keys the unprefixed settings by their variable names)."""
    return {_FIELD_OF[key.lower()]: value for key, value in values.items() if key.lower() in _FIELD_OF}


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors(include_url=False):
        loc = error["loc"][0] if error["loc"] else ""
        field = _FIELD_OF.get(str(loc).lower())
        name = env_name(field) if field else str(loc)
        msg = error["msg"][:1].lower() + error["msg"][1:]
        secret = field is not None and Settings.model_fields[field].annotation is SecretStr
        got = "" if secret or "input" not in error or error["type"] == "missing" else f" (got {error['input']!r})"
        lines.append(f"{name}: {msg}{got}")
    return "\n".join(lines)


def load_settings(env: Mapping[str, str] | None = None, dotenv: Path | None = Path(".env"),
                  **overrides: Any) -> Settings:
    """Build `Settings` from `.env` (lowest), the environment, then explicit overrides (highest).

    Parameters
    ----------
    env : the environment to read (default: `os.environ`)
    dotenv : a `.env` file (KEY=VALUE lines, `#` comments, quotes, `export`); None or a missing file: none
    overrides : field values that win over both

    Raises
    ------
    SettingsError
        A value cannot be used; one line per bad variable, e.g.
        "SPY_MAX_CLIP_SECONDS: input should be a valid number, unable to parse string as a number (got 'abc')".
    """
    values: dict[str, Any] = {}
    if dotenv is not None:
        # The file's variables (python-dotenv's parsing), then matched to settings exactly as the environment is,
        # so the other variables a .env shared with docker compose holds are left alone.
        values.update(_fields_from(_Environ(Settings, DotEnvSettingsSource(Settings, env_file=dotenv).env_vars)()))
    values.update(_fields_from(_Environ(Settings, os.environ if env is None else env)()))
    values.update(overrides)
    try:
        return Settings(**values)
    except ValidationError as exc:
        # pydantic's own message spans three lines per error and names fields, not variables
        raise SettingsError(_describe(exc)) from exc
