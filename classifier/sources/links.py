"""Parse links and timestamps out of chat text into a `Source`; the host allowlists live here too.

Pure functions only: nothing here touches the network. `fetch.py` resolves share links and downloads.
"""

from __future__ import annotations

import dataclasses
import math
import re
import urllib.parse
from dataclasses import dataclass

from classifier import errors

__all__ = [
    "Source", "parse_time", "format_time", "find_source", "is_allowed_url", "egress_allowed",
    "split_host_port", "YOUTUBE_HOSTS", "SOUNDCLOUD_HOSTS", "SOUNDCLOUD_SHORT_HOST",
]

# Hosts whose links users may paste. Anything else is refused before a single connection is made.
YOUTUBE_HOSTS = frozenset({
    "youtube.com", "www.youtube.com", "m.youtube.com", "music.youtube.com", "youtu.be", "www.youtu.be",
    "youtube-nocookie.com", "www.youtube-nocookie.com",
})
SOUNDCLOUD_SHORT_HOST = "on.soundcloud.com"
SOUNDCLOUD_HOSTS = frozenset({"soundcloud.com", "www.soundcloud.com", "m.soundcloud.com", SOUNDCLOUD_SHORT_HOST})

# Hosts yt-dlp and ffmpeg may *connect to* while fetching one platform's link: its pages, APIs and CDNs.
# Matched as "equal or a subdomain of"; enforced at the network edge by the egress proxy (egress.py).
_EGRESS_SUFFIXES: dict[str, tuple[str, ...]] = {
    "youtube": ("youtube.com", "youtu.be", "youtube-nocookie.com", "googlevideo.com", "ytimg.com",
                "ggpht.com", "googleapis.com"),
    "soundcloud": ("soundcloud.com", "sndcdn.com", "soundcloud.cloud"),
}
_WEB_PORTS = (None, 80, 443)

_YT_ID = re.compile(r"[0-9A-Za-z_-]{11}")
_SC_SLUG = re.compile(r"[\w-]+")
# First path segments on soundcloud.com that are pages, not artists.
_SC_RESERVED = frozenset({
    "discover", "stream", "search", "you", "charts", "upload", "stations", "messages", "settings", "pages",
    "terms-of-use", "jobs", "mobile", "pro", "imprint", "notifications", "people", "feed", "signin", "logout",
})
# Second path segments that are lists of tracks rather than one track.
_SC_LISTS = frozenset({
    "sets", "tracks", "albums", "reposts", "likes", "popular-tracks", "followers", "following", "comments",
    "spotlight", "playlists", "toptracks",
})

_LONGEST_TIME_S = 1e7  # ~115 days: anything longer is a typo, not a timestamp

_TIME_HINT = "Write it like 1:02:03, 62:03 or 1h2m3s."


@dataclass(frozen=True, slots=True)
class Source:
    """A link we can fetch: its platform, canonical URL (no timestamp) and the requested start."""

    platform: str            # "youtube" | "soundcloud" | "extra" (operator-added host)
    url: str                 # e.g. https://www.youtube.com/watch?v=ID
    start_s: float | None    # requested start in seconds, None if none given

    def with_start(self, start_s: float | None) -> "Source":
        return dataclasses.replace(self, start_s=start_s)

    @property
    def host(self) -> str:
        """The URL's host (for logs: never the full URL, which may carry a secret token)."""
        return urllib.parse.urlsplit(self.url).hostname or ""

    def display_url(self) -> str:
        """The canonical URL with its timestamp in the platform's own form (YouTube `t=3723s`, else `#t=1:02:03`)."""
        if self.start_s is None:
            return self.url
        if self.platform == "youtube":
            sep = "&" if "?" in self.url else "?"
            return f"{self.url}{sep}t={int(self.start_s)}s"
        return f"{self.url}#t={format_time(self.start_s)}"


# --- timestamps ----------------------------------------------------------------------------------

_COLON = re.compile(r"(\d+):(\d{1,2})(?::(\d{1,2}))?(\.\d+)?")
_UNIT_TOKEN = re.compile(r"(\d+(?:\.\d+)?)([hms]?)")
_NEXT_UNIT = {"h": "m", "m": "s"}
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0}


def _bad_time(text: str) -> errors.BadSource:
    shown = text if len(text) <= 40 else text[:37] + "..."
    return errors.BadSource(f"I could not read the time \u201c{shown}\u201d. {_TIME_HINT}")


def parse_time(text: str) -> float:
    """Seconds from any way people write a moment: `3723`, `1h2m3s`, `62m3s`, `1m30`, `1:02:03`, `62:03`.

    A bare number after a unit takes the next smaller unit (`1m30` is 90 s, `1h30` is 90 min), because that
    is what people mean (yt-dlp's own parser rejects `1m30`). Raises `errors.BadSource` on anything else.
    """
    raw = urllib.parse.unquote(str(text)).strip()
    s = raw.lower().replace(" ", "")
    if s.startswith("t="):
        s = s[2:]
    colon = _COLON.fullmatch(s)
    if colon:
        a, b, c, frac = colon.groups()
        if c is None:                                   # m:ss (minutes may exceed 59: "62:03")
            minutes, seconds, hours = int(a), int(b), 0
        else:                                           # h:mm:ss
            hours, minutes, seconds = int(a), int(b), int(c)
            if minutes >= 60:
                raise _bad_time(raw)
        if seconds >= 60:
            raise _bad_time(raw)
        value = hours * 3600 + minutes * 60 + seconds + (float(frac) if frac else 0.0)
    else:
        value = _parse_units(s, raw)
    if not math.isfinite(value) or value > _LONGEST_TIME_S:
        raise _bad_time(raw)
    return float(value)


def _parse_units(s: str, raw: str) -> float:
    tokens = _UNIT_TOKEN.findall(s)
    if not tokens or "".join(n + u for n, u in tokens) != s:
        raise _bad_time(raw)
    total, last_unit = 0.0, ""
    for i, (number, unit) in enumerate(tokens):
        if not unit:
            if i != len(tokens) - 1:
                raise _bad_time(raw)
            unit = _NEXT_UNIT.get(last_unit, "s")       # "1m30" -> 30 s, "1h30" -> 30 min
        if last_unit and "hms".index(unit) <= "hms".index(last_unit):
            raise _bad_time(raw)                        # units must go down: h, then m, then s
        total += float(number) * _UNIT_S[unit]
        last_unit = unit
    return total


def format_time(seconds: float) -> str:
    """`1:02:03` above an hour, else `2:03`; fractions of a second are dropped."""
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"not a time: {seconds!r}")
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


# --- hosts ---------------------------------------------------------------------------------------

def split_host_port(entry: str) -> tuple[str, int | None]:
    """`"127.0.0.1:8765"` -> `("127.0.0.1", 8765)`; `"[::1]:80"` -> `("::1", 80)`; `"example.org"` -> (host, None)."""
    entry = entry.strip().lower()
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    host, sep, port = entry.rpartition(":")
    if sep and port.isdigit() and ":" not in host:
        return host.rstrip("."), int(port)
    return entry.rstrip("."), None


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def _is_extra(host: str, port: int | None, scheme: str, extra_hosts: tuple[str, ...]) -> bool:
    port = port if port is not None else _default_port(scheme)
    for entry in extra_hosts:
        e_host, e_port = split_host_port(entry)
        if e_host == host and (e_port if e_port is not None else _default_port(scheme)) == port:
            return True
    return False


def _split(url: str) -> urllib.parse.SplitResult | None:
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError on a malformed port)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return parts


def is_allowed_url(url: str, extra_hosts: tuple[str, ...] = ()) -> bool:
    """True for an http(s) link to a YouTube or SoundCloud page host, or to an operator-added `host:port`."""
    parts = _split(url)
    if parts is None or "@" in parts.netloc:            # userinfo: `youtube.com@evil.example` tricks
        return False
    host = parts.hostname.rstrip(".")
    if host in YOUTUBE_HOSTS or host in SOUNDCLOUD_HOSTS:
        return parts.port in _WEB_PORTS
    return _is_extra(host, parts.port, parts.scheme, extra_hosts)


def egress_allowed(platform: str, host: str, port: int, extra_hosts: tuple[str, ...] = ()) -> bool:
    """May a fetch of a `platform` link open a connection to `host:port`? (Used by the egress proxy, egress.py.)"""
    host = host.lower().rstrip(".")
    if platform == "extra":
        for entry in extra_hosts:
            e_host, e_port = split_host_port(entry)
            if e_host == host and (port == e_port if e_port is not None else port in (80, 443)):
                return True
        return False
    if port not in (80, 443):
        return False
    return any(host == s or host.endswith("." + s) for s in _EGRESS_SUFFIXES.get(platform, ()))


# --- links in free text ----------------------------------------------------------------------------

_CANDIDATE = re.compile(r"""(?ix)
      https?://[^\s<>"'`|]+                                         # anything with a scheme (IPs, localhost)
    | (?<![\w@.-])(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}  # or a bare domain ...
      (?::\d{1,5})?(?:[/?#][^\s<>"'`|]*)?                           # ... with an optional port and path
""")
_TRAILING = ".,;:!?)]}>'\"\u2019\u201d\u00bb\u2026*_~"


def _candidates(text: str, extra_hosts: tuple[str, ...]) -> list[str]:
    """URL-looking words in order. Bare domains count only with `www.`, a path, or a known host."""
    out = []
    for match in _CANDIDATE.finditer(text):
        word = match.group(0).rstrip(_TRAILING)
        if word.lower().startswith(("http://", "https://")):
            out.append(word)
            continue
        host = split_host_port(re.split(r"[/?#]", word, maxsplit=1)[0])[0]
        has_path = bool(re.search(r"[/?#]", word))
        if host in YOUTUBE_HOSTS or host in SOUNDCLOUD_HOSTS or host.startswith("www.") or has_path:
            out.append("https://" + word)
    return out


def find_source(text: str, *, at: str | float | None = None, extra_hosts: tuple[str, ...] = ()) -> Source:
    """The first supported link in `text` as a `Source`; `at` (a slash-command option, `--at`) overrides its time.

    Raises
    ------
    errors.NotAllowed       links only to hosts outside the allowlist
    errors.PlaylistRefused  a playlist, set, channel or profile instead of one track
    errors.BadSource        no link at all, a platform page that is not a track, or an unreadable time
    """
    # A later good link wins over an earlier bad one; otherwise the most specific refusal is raised:
    # what is wrong with a platform link beats "wrong host", which beats "no link at all".
    platform_refusal: errors.BadSource | None = None
    host_refusal: errors.NotAllowed | None = None
    source: Source | None = None
    for url in _candidates(text, extra_hosts):
        parts = _split(url)
        if parts is None:
            continue
        if not is_allowed_url(url, extra_hosts):
            host_refusal = host_refusal or errors.NotAllowed(detail=f"host {parts.hostname}")
            continue
        try:
            source = _parse_allowed(parts, extra_hosts)
        except errors.BadSource as exc:
            platform_refusal = platform_refusal or exc
            continue
        break
    if source is None:
        raise platform_refusal or host_refusal or errors.BadSource()
    if at is not None:
        source = source.with_start(_start_from_option(at))
    return source


def _start_from_option(at: str | float) -> float:
    if isinstance(at, str):
        return parse_time(at)
    value = float(at)
    if not math.isfinite(value) or value < 0 or value > _LONGEST_TIME_S:
        raise _bad_time(str(at))
    return value


def _parse_allowed(parts: urllib.parse.SplitResult, extra_hosts: tuple[str, ...]) -> Source:
    host = parts.hostname.rstrip(".")
    if host in YOUTUBE_HOSTS:
        return _youtube(parts, host)
    if host in SOUNDCLOUD_HOSTS:
        return _soundcloud(parts, host)
    url = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path or "/", parts.query, ""))
    return Source("extra", url, _time_from(parts, keys=("t",), query=False))


def _time_from(parts: urllib.parse.SplitResult, *, keys: tuple[str, ...], query: bool = True) -> float | None:
    """The first of `keys` in the query (if `query`), then in the fragment (`#t=1:02:03`, `#t=90`)."""
    places = []
    if query:
        places.append(urllib.parse.parse_qs(parts.query, keep_blank_values=True))
    places.append(urllib.parse.parse_qs(parts.fragment, keep_blank_values=True))
    for place in places:
        for key in keys:
            values = place.get(key)
            if values and values[0].strip():
                return parse_time(values[0])
    return None


def _youtube(parts: urllib.parse.SplitResult, host: str) -> Source:
    query = urllib.parse.parse_qs(parts.query)
    segments = [s for s in parts.path.split("/") if s]
    video_id = None
    if host.endswith("youtu.be"):
        video_id = segments[0] if segments else None
    elif segments[:1] == ["watch"]:
        video_id = (query.get("v") or [None])[0]
    elif len(segments) >= 2 and segments[0] in ("shorts", "live", "embed", "v", "e"):
        video_id = segments[1]
    if video_id is None:
        if "list" in query or segments[:1] == ["playlist"]:
            raise errors.PlaylistRefused()
        if segments and (segments[0].startswith("@") or segments[0] in ("channel", "c", "user")):
            raise errors.PlaylistRefused("That is a YouTube channel, not a video. Open the video and paste its link.")
        raise errors.BadSource("That YouTube link does not point at a video. Open the video and paste its link.")
    if not _YT_ID.fullmatch(video_id):
        raise errors.BadSource("That YouTube link looks cut off. Copy it again with the Share button.")
    start = _time_from(parts, keys=("t", "start", "time_continue"))
    return Source("youtube", f"https://www.youtube.com/watch?v={video_id}", start)


def _soundcloud(parts: urllib.parse.SplitResult, host: str) -> Source:
    segments = [s for s in parts.path.split("/") if s]
    start = _time_from(parts, keys=("t",))
    if host == SOUNDCLOUD_SHORT_HOST:
        # A share link: where it points is only known after following its redirect (fetch.py does that).
        if len(segments) != 1 or not _SC_SLUG.fullmatch(segments[0]):
            raise errors.BadSource("That SoundCloud share link looks cut off. Copy it again with the Share button.")
        return Source("soundcloud", f"https://{SOUNDCLOUD_SHORT_HOST}/{segments[0]}", start)
    not_a_track = errors.BadSource("That SoundCloud link is not a track. Open the track and paste its link.")
    if not segments or segments[0].lower() in _SC_RESERVED:
        raise not_a_track
    if len(segments) == 1:
        raise errors.PlaylistRefused("That is a SoundCloud profile, not a track. Open the track and paste its link.")
    if segments[1].lower() in _SC_LISTS:
        raise errors.PlaylistRefused()
    if not all(_SC_SLUG.fullmatch(s) for s in segments[:3]):
        raise not_a_track
    path = "/".join(segments[:2])
    if len(segments) >= 3 and segments[2].startswith("s-"):
        path += "/" + segments[2]                       # secret token of a private share link
    return Source("soundcloud", f"https://soundcloud.com/{path}", start)
