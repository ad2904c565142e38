"""Typed operational settings, read once from the environment and an optional `.env` file.

DSP parameters are *not* here: they belong to the model (`models/<name>/params.json`) because they
must match training. Everything here is operational: paths, tokens, limits, URLs. Every limit carries
its unit in its name and has a default; `.env.example` documents each one.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

__all__ = ["Settings", "load_settings", "read_dotenv"]


def _secret(default: str = "") -> Any:
    # repr=False keeps tokens out of `repr(settings)` and therefore out of any log line that prints it.
    return field(default=default, repr=False)


@dataclass(frozen=True, slots=True)
class Settings:
    # --- storage -------------------------------------------------------------------------------
    data_dir: Path = Path("data")
    """Where the embedded default keeps its SQLite index and trained artist models."""
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
    fetch_extra_hosts: tuple[str, ...] = ()
    """Extra `host:port` media hosts allowed (generic extractor only for these). Env: SPY_FETCH_EXTRA_HOSTS."""
    fetch_proxy_url: str = ""
    """Upstream `http://host:port` proxy for YouTube/SoundCloud fetches (extra hosts stay direct); empty = direct.
    Every fetch already runs through a per-job loopback proxy that enforces the host allowlist and byte cap;
    this is where that proxy forwards to. Env: SPY_FETCH_PROXY_URL."""

    # --- classifier service / client ----------------------------------------------------------
    classifier_url: str = ""
    """If set, bots and CLI call this remote classifier instead of running the model in-process."""
    classifier_token: str = _secret()
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
    telegram_token: str = _secret()
    telegram_base_url: str = "https://api.telegram.org/bot"
    telegram_base_file_url: str = "https://api.telegram.org/file/bot"
    telegram_local_mode: bool = False
    discord_token: str = _secret()
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

    @property
    def database(self) -> Path:
        return self.db_path if self.db_path is not None else self.data_dir / "spy.sqlite3"

    @property
    def heads_dir(self) -> Path:
        """Trained artist models (versioned artifacts)."""
        return self.data_dir / "models"

    def replace(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **changes)

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


_ENV_PREFIX = "SPY_"
# Variables the issues name without our prefix (shared with other tools and with docker compose).
_UNPREFIXED = {
    "classifier_url", "classifier_token", "telegram_token", "telegram_base_url",
    "telegram_base_file_url", "telegram_local_mode", "discord_token",
}


def env_name(field_name: str) -> str:
    """The environment variable that sets `field_name`."""
    return field_name.upper() if field_name in _UNPREFIXED else _ENV_PREFIX + field_name.upper()


def read_dotenv(path: Path) -> dict[str, str]:
    """Parse a minimal `.env` file: KEY=VALUE lines, `#` comments, optional quotes."""
    out: dict[str, str] = {}
    if not path.is_file():
        return out
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip().removeprefix("export ").strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key] = value
    return out


def _convert(kind: Any, raw: str, name: str) -> Any:
    text = str(kind)
    try:
        if "Path" in text:
            return Path(raw).expanduser() if raw else None
        if "tuple" in text:
            return tuple(p.strip() for p in raw.split(",") if p.strip())
        if text == "bool" or kind is bool:
            low = raw.strip().lower()
            if low in {"1", "true", "yes", "on"}:
                return True
            if low in {"0", "false", "no", "off", ""}:
                return False
            raise ValueError(raw)
        if text == "int" or kind is int:
            return int(raw)
        if text == "float" or kind is float:
            return float(raw)
    except ValueError as exc:
        raise ValueError(f"setting {name}: cannot read {raw!r} as {text}") from exc
    return raw


def load_settings(env: Mapping[str, str] | None = None, dotenv: Path | None = Path(".env"),
                  **overrides: Any) -> Settings:
    """Build `Settings` from `.env` (lowest), the environment, then explicit overrides (highest)."""
    merged: dict[str, str] = {}
    if dotenv is not None:
        merged.update(read_dotenv(dotenv))
    merged.update(os.environ if env is None else env)
    values: dict[str, Any] = {}
    for f in fields(Settings):
        name = env_name(f.name)
        if name in merged:
            value = _convert(f.type, merged[name], name)
            if value is not None:
                values[f.name] = value
    values.update(overrides)
    return Settings(**values)
