"""A file someone sent (`Clip`), and what counts as audio among such files, the same on every platform.

Each platform turns its attachment (a Telegram voice note, a Discord attachment) into a `Clip` and supplies
the one platform-specific part, `save`: how to fetch the bytes to a path. Everything else, refusing what
cannot work before a byte is downloaded included, is shared.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable

from bot import replies
from classifier import errors
from classifier.audio.decode import AUDIO_SUFFIXES

__all__ = ["Clip", "Save", "audio_like", "clip_suffix"]

# Types that make no claim either way: the decoder looks at the bytes.
_UNKNOWN_MIMES = frozenset({"", "application/octet-stream", "application/ogg", "binary/octet-stream"})
# What to save a clip as when its name has no audio suffix: the container each platform records these in.
_DEFAULT_SUFFIX = {"voice note": ".ogg", "voice message": ".ogg", "video note": ".mp4", "video": ".mp4"}

Save = Callable[[Path, int], Awaitable[None]]
"""await save(path, max_bytes): write the file's bytes to `path`. Raises a `SpyError` (`FetchFailed`, or
`DownloadTooLarge` when the platform says the file is over `max_bytes`), wrapping the platform's own errors."""


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


@dataclass(frozen=True, slots=True)
class Clip:
    """A file someone sent, as its platform describes it, and where in it to start listening.

    kind : "voice note", "voice message", "audio file", "video note", "video" or "file" (any other document)
    name : the file's name as the sender chose it (None for voice notes and messages: the platform named those)
    mime : the stated content type, if any
    size : the stated size in bytes (None: the platform did not say)
    duration_s : the stated duration in seconds, if any
    save : the platform's download (see `Save`)
    start_s : where to start listening, in seconds (None: the beginning)
    """

    kind: str
    name: str | None
    mime: str | None
    size: int | None
    duration_s: float | None
    save: Save = field(compare=False, repr=False)
    start_s: float | None = None

    @property
    def label(self) -> str:
        """How answers name the clip: its file name, or its kind."""
        return self.name or self.kind

    @property
    def suffix(self) -> str:
        return clip_suffix(self.name, _DEFAULT_SUFFIX.get(self.kind, ".bin"))

    def audio_like(self) -> bool:
        """Voice, audio and video are audio; another file is when its type or name says so, or says nothing."""
        return self.kind != "file" or audio_like(self.name, self.mime)

    def starting_at(self, start_s: float | None) -> "Clip":
        return dataclasses.replace(self, start_s=start_s)

    def check(self, max_bytes: int) -> None:
        """Refuse what cannot work before anything is acknowledged or downloaded: not audio, empty, too big."""
        if not self.audio_like():
            raise errors.Undecodable(replies.not_audio(self.name, self.mime), detail=f"mime {self.mime}")
        if self.size == 0:
            raise errors.Undecodable(replies.empty_file(self.kind), detail="0 bytes")
        if self.size is not None and self.size > max_bytes:
            raise errors.DownloadTooLarge(replies.file_too_big(self.size, max_bytes), detail=f"{self.size} bytes")
