"""What counts as audio among the files people send, the same on every platform."""

from __future__ import annotations

from pathlib import Path

from classifier.audio.decode import AUDIO_SUFFIXES

__all__ = ["audio_like", "clip_suffix"]

# Types that make no claim either way: the decoder looks at the bytes.
_UNKNOWN_MIMES = frozenset({"", "application/octet-stream", "application/ogg", "binary/octet-stream"})


def audio_like(name: str | None, mime: str | None) -> bool:
    """A generic file is audio when its type or name says so, or its type says nothing."""
    mime = (mime or "").split(";")[0].strip().lower()
    if mime.split("/")[0] in ("audio", "video") or Path(name or "").suffix.lower() in AUDIO_SUFFIXES:
        return True
    return mime in _UNKNOWN_MIMES


def clip_suffix(name: str | None, default: str) -> str:
    """The suffix to save a clip under: its own when it is an audio suffix, else `default`."""
    suffix = Path(name or "").suffix.lower()
    return suffix if suffix in AUDIO_SUFFIXES else default
