"""One URL -> a `Source`: every form of a YouTube or SoundCloud track link, normalised to the canonical one,
and the host allowlists. Also artist pages (`page_of`), which only operators may enrol from.

Pure functions: nothing here touches the network. A canonical URL is rebuilt from the parsed id, never
copied from the input, so whatever else a pasted link carried (other hosts, CR/LF, tracking) goes no further.
(About 400 lines: each platform's forms are a list that grows with the platform, kept in one place.)
"""

from __future__ import annotations

import dataclasses
import re
import urllib.parse
from dataclasses import dataclass

from classifier import errors
from classifier.sources.timecodes import format_time, parse_time

__all__ = [
    "Source", "Page", "from_url", "page_of", "is_allowed_url", "egress_allowed", "split_host_port", "split_url",
    "YOUTUBE_HOSTS", "SOUNDCLOUD_HOSTS", "SOUNDCLOUD_SHORT_HOST", "MAX_URL_CHARS",
]

MAX_URL_CHARS = 2048      # browsers and platforms cap links near here; a track link is under 300

# Hosts whose links users may paste. Anything else is refused before a single connection is made.
YOUTUBE_HOSTS = frozenset({
    "youtube.com", "www.youtube.com", "m.youtube.com", "music.youtube.com", "youtu.be", "www.youtu.be",
    "youtube-nocookie.com", "www.youtube-nocookie.com", "youtubekids.com", "www.youtubekids.com",
    "youtube.googleapis.com", "consent.youtube.com",
})
SOUNDCLOUD_SHORT_HOST = "on.soundcloud.com"
SOUNDCLOUD_HOSTS = frozenset({
    "soundcloud.com", "www.soundcloud.com", "m.soundcloud.com", SOUNDCLOUD_SHORT_HOST,
    "api.soundcloud.com", "api-v2.soundcloud.com", "w.soundcloud.com",
})

# Hosts yt-dlp and ffmpeg may *connect to* while fetching one platform's link: its pages, APIs and CDNs.
# Matched as "equal or a subdomain of"; enforced at the network edge by the egress proxy (egress.py).
_EGRESS_SUFFIXES: dict[str, tuple[str, ...]] = {
    "youtube": ("youtube.com", "youtu.be", "youtube-nocookie.com", "googlevideo.com", "ytimg.com",
                "ggpht.com", "googleapis.com"),
    "soundcloud": ("soundcloud.com", "sndcdn.com", "soundcloud.cloud"),
}
_WEB_PORTS = (None, 80, 443)

_YT_ID = re.compile(r"[0-9A-Za-z_-]{11}", re.ASCII)
_YT_CLIP = re.compile(r"Ug[0-9A-Za-z_-]{10,60}", re.ASCII)
_YT_LIST = re.compile(r"[0-9A-Za-z_-]{2,64}", re.ASCII)
_YT_HANDLE = re.compile(r"@[\w.-]{1,100}")
_SC_SLUG = re.compile(r"[A-Za-z0-9_-]+", re.ASCII)
_SC_TRACK_ID = re.compile(r"(?:soundcloud(?:%3A|:)tracks(?:%3A|:))?(\d{1,20})", re.ASCII | re.I)
# First path segments on soundcloud.com that are pages, not artists.
_SC_RESERVED = frozenset({
    "discover", "stream", "search", "you", "charts", "upload", "messages", "settings", "pages",
    "terms-of-use", "jobs", "mobile", "pro", "imprint", "notifications", "people", "feed", "signin", "logout",
})
# Second path segments that are lists of tracks rather than one track.
_SC_LISTS = frozenset({
    "sets", "tracks", "albums", "reposts", "likes", "popular-tracks", "followers", "following", "comments",
    "spotlight", "playlists", "toptracks",
})
_YT_WATCH = frozenset({"", "watch", "watch_popup", "watch.php", "movie", "movie_popup"})
_YT_ID_PATHS = frozenset({"v", "embed", "e", "shorts", "live"})
_YT_CHANNEL = frozenset({"channel", "c", "user"})
_CUT_OFF_YT = "That YouTube link looks cut off or mangled. Copy it again with the Share button."
_NOT_A_VIDEO = "That YouTube link does not point at a video. Open the video and paste its link."
_CHANNEL = "That is a YouTube channel, not a video. Open the video and paste its link."
_SC_NOT_A_TRACK = "That SoundCloud link is not a track. Open the track and paste its link."
_SC_PROFILE = "That is a SoundCloud profile, not a track. Open the track and paste its link."


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


@dataclass(frozen=True, slots=True)
class Page:
    """A page that lists tracks (an artist's profile or uploads, a set, a playlist): for operators to enrol."""

    platform: str
    url: str                 # canonical: https://soundcloud.com/ARTIST/tracks, https://www.youtube.com/@X/videos


# --- hosts ---------------------------------------------------------------------------------------

def split_host_port(entry: str) -> tuple[str, int | None]:
    """`"127.0.0.1:8765"` -> `("127.0.0.1", 8765)`; `"[::1]:80"` -> `("::1", 80)`; `"example.org"` -> (host, None)."""
    entry = entry.strip().lower()
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() and len(rest) < 7 else None
    host, sep, port = entry.rpartition(":")
    if sep and port.isdigit() and len(port) < 6 and ":" not in host:
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


def split_url(url: str) -> urllib.parse.SplitResult | None:
    """`urlsplit` for an http(s) URL with a host and a valid port; None for anything else."""
    if len(url) > MAX_URL_CHARS:
        return None
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError on a malformed port)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    return parts


def _platform_of(host: str) -> str:
    return "youtube" if host in YOUTUBE_HOSTS else "soundcloud" if host in SOUNDCLOUD_HOSTS else "extra"


def is_allowed_url(url: str, extra_hosts: tuple[str, ...] = ()) -> bool:
    """True for an http(s) link to a YouTube or SoundCloud page host, or to an operator-added `host:port`."""
    parts = split_url(url)
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


# --- one URL -> a Source ---------------------------------------------------------------------------

def from_url(url: str, extra_hosts: tuple[str, ...] = ()) -> Source:
    """The track a URL points at, normalised, with the start written in the link (`t=`, `#t=`, `start=`).

    Raises
    ------
    errors.NotAllowed       a host outside the allowlist (or userinfo, or an odd port)
    errors.PlaylistRefused  a playlist, set, channel, profile or embedded playlist instead of one track
    errors.BadSource        a platform page that is not a track, or a link cut off
    errors.BadTime          a time in the link that cannot be read
    """
    parts = split_url(url)
    if parts is None:
        raise errors.BadSource(detail="not an http(s) URL")
    if not is_allowed_url(url, extra_hosts):
        raise errors.NotAllowed(detail=f"host {parts.hostname}")
    return _from_parts(parts, extra_hosts, depth=0)


def _from_parts(parts: urllib.parse.SplitResult, extra_hosts: tuple[str, ...], *, depth: int) -> Source:
    host = (parts.hostname or "").rstrip(".")
    if host in YOUTUBE_HOSTS:
        return _youtube(parts, host, depth)
    if host in SOUNDCLOUD_HOSTS:
        return _soundcloud(parts, host, depth)
    url = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path or "/", parts.query, ""))
    if re.search(r"%(?:0[0-9a-f]|1[0-9a-f]|7f)", url, re.I):
        raise errors.BadSource("That link has control characters (such as a line break) inside it.",
                               detail="percent-encoded control character")
    return Source("extra", url, _time(_pairs(parts.fragment), ("t",)))


def _pairs(query: str) -> list[tuple[str, str]]:
    """Query pairs, read the way people paste them: `?t=90` added after an existing query, `&amp;` from HTML."""
    for _ in range(4):
        if "&amp;" not in query:
            break
        query = query.replace("&amp;", "&")
    return urllib.parse.parse_qsl(query.replace("?", "&"), keep_blank_values=True)


def _first(pairs: list[tuple[str, str]], *keys: str) -> str | None:
    for key in keys:
        for k, v in pairs:
            if k == key and v.strip():
                return v
    return None


def _time(pairs: list[tuple[str, str]], keys: tuple[str, ...]) -> float | None:
    value = _first(pairs, *keys)
    return None if value is None else parse_time(value)


def _nested(target: str, base: str, extra_hosts: tuple[str, ...], depth: int) -> Source:
    """A link inside a link (an attribution link's `u=`, a consent page's `continue=`, a player's `url=`)."""
    if depth >= 2:
        raise errors.BadSource(_NOT_A_VIDEO, detail="links nested too deep")
    parts = split_url(urllib.parse.urljoin(base, target))
    if parts is None or "@" in parts.netloc or (parts.hostname or "") not in YOUTUBE_HOSTS | SOUNDCLOUD_HOSTS:
        raise errors.NotAllowed(detail="nested link to another host")
    return _from_parts(parts, extra_hosts, depth=depth + 1)


def _video_id(value: str | None) -> str | None:
    """The 11-character id at the start of `value`, if nothing id-like follows it (`ID/`, `ID%20` are fine)."""
    if value is None:
        return None
    if not _YT_ID.match(value) or value[11:12] in _ID_CHARS:
        raise errors.BadSource(_CUT_OFF_YT, detail=f"bad video id ({len(value)} characters)")
    return value[:11]


_ID_CHARS = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_-")


def _youtube(parts: urllib.parse.SplitResult, host: str, depth: int) -> Source:
    path, _, glued = parts.path.partition("&")          # youtu.be/ID&t=90, /v/ID&hl=en: a query without its `?`
    pairs = _pairs(parts.query) + _pairs(glued)
    fragment = parts.fragment.lstrip("!")                # watch#!v=ID
    if fragment.startswith("/"):                         # youtube.com/#/watch?v=ID: an anchor redirect
        return _nested(fragment, "https://www.youtube.com/", (), depth)
    fragment_pairs = _pairs(fragment)
    segments = [s for s in path.split("/") if s]
    first = segments[0].lower() if segments else ""
    if host == "consent.youtube.com" and (target := _first(pairs, "continue")):
        return _nested(target, "https://www.youtube.com/", (), depth)
    if first == "attribution_link" and (target := _first(pairs, "u")):
        return _nested(target, "https://www.youtube.com/", (), depth)
    video_id: str | None = None
    if host.endswith("youtu.be"):
        video_id = _video_id(segments[0]) if segments else None
    elif first in _YT_WATCH and len(segments) <= 1:
        video_id = _video_id(_first(pairs, "v") or _first(fragment_pairs, "v"))
    elif first == "embed" and len(segments) >= 2 and segments[1] == "videoseries":
        raise errors.PlaylistRefused(detail="embedded playlist")
    elif first == "embed" and len(segments) >= 2 and segments[1] == "live_stream":
        raise errors.PlaylistRefused("That is a channel's live stream, not a video. Send the recording's link "
                                     "once it is up.", detail="embedded channel live stream")
    elif first in _YT_ID_PATHS and len(segments) >= 2:
        video_id = _video_id(segments[1])
    elif first == "clip" and len(segments) >= 2:
        if not _YT_CLIP.fullmatch(segments[1]):
            raise errors.BadSource(_CUT_OFF_YT, detail="bad clip id")
        # A clip is a few seconds of a video that yt-dlp's clip extractor finds; the clip sets the window.
        return Source("youtube", f"https://www.youtube.com/clip/{segments[1]}", None)
    if video_id is None:
        if _first(pairs, "list") or first == "playlist" or (first == "source" and segments[-1:] == ["shorts"]):
            raise errors.PlaylistRefused()
        if first.startswith("@") or first in _YT_CHANNEL:
            raise errors.PlaylistRefused(_CHANNEL)
        raise errors.BadSource(_NOT_A_VIDEO)
    start = _time(pairs, ("t", "start", "time_continue"))
    if start is None:
        start = _time(fragment_pairs, ("t", "start", "time_continue"))
    return Source("youtube", f"https://www.youtube.com/watch?v={video_id}", start)


def _soundcloud(parts: urllib.parse.SplitResult, host: str, depth: int) -> Source:
    path, _, glued = parts.path.partition("&")
    pairs = _pairs(parts.query) + _pairs(glued)
    segments = [s for s in path.split("/") if s]
    start = _time(pairs, ("t",))
    if start is None:
        start = _time(_pairs(parts.fragment), ("t",))
    if host == "w.soundcloud.com":                       # the embedded player: its `url=` is the track
        target = _first(pairs, "url")
        if segments[:1] != ["player"] or target is None:
            raise errors.BadSource(_SC_NOT_A_TRACK)
        inner = _nested(target, "https://api.soundcloud.com/", (), depth)
        token = _first(pairs, "secret_token")
        if token and inner.host.startswith("api") and "secret_token" not in inner.url:
            inner = dataclasses.replace(inner, url=_api_track(inner.url.rsplit("/", 1)[1], token))
        return inner if start is None else inner.with_start(start)
    if host.startswith("api"):
        if len(segments) == 2 and segments[0] == "tracks" and (m := _SC_TRACK_ID.fullmatch(segments[1])):
            return Source("soundcloud", _api_track(m.group(1), _first(pairs, "secret_token")), start)
        if segments[:1] in (["playlists"], ["users"]):
            raise errors.PlaylistRefused()
        raise errors.BadSource(_SC_NOT_A_TRACK)
    if host == SOUNDCLOUD_SHORT_HOST:
        # A share link: where it points is only known after following its redirect (fetch.py does that).
        if len(segments) != 1 or not _SC_SLUG.fullmatch(segments[0]):
            raise errors.BadSource("That SoundCloud share link looks cut off. Copy it again with the Share button.")
        return Source("soundcloud", f"https://{SOUNDCLOUD_SHORT_HOST}/{segments[0]}", start)
    if not segments or segments[0].lower() in _SC_RESERVED:
        raise errors.BadSource(_SC_NOT_A_TRACK)
    if segments[0].lower() == "stations":
        raise errors.PlaylistRefused()
    if len(segments) == 1:
        raise errors.PlaylistRefused(_SC_PROFILE)
    if segments[1].lower() in _SC_LISTS or (len(segments) >= 3 and segments[2].lower() in
                                            ("recommended", "albums", "sets", "playlists")):
        raise errors.PlaylistRefused()
    if not all(_SC_SLUG.fullmatch(s) for s in segments[:3]):
        raise errors.BadSource(_SC_NOT_A_TRACK)
    path = "/".join(segments[:2])
    if len(segments) >= 3 and segments[2].startswith("s-"):
        path += "/" + segments[2]                       # secret token of a private share link
    return Source("soundcloud", f"https://soundcloud.com/{path}", start)


def _api_track(track_id: str, token: str | None) -> str:
    url = f"https://api.soundcloud.com/tracks/{track_id}"
    if token and _SC_SLUG.fullmatch(token):
        url += f"?secret_token={token}"
    return url


# --- artist pages (operators only) -------------------------------------------------------------------

_PAGE_TABS = {"videos", "streams"}


def page_of(url: str, extra_hosts: tuple[str, ...] = ()) -> Page | None:
    """The page of tracks a URL names (a profile, an artist's tracks, a set, a playlist, a channel's uploads),
    canonical; None when the URL is one track. On an operator-added host any URL but a media file's is a page
    (yt-dlp's generic extractor lists an RSS feed, or finds the one track on an HTML page).

    Raises errors.NotAllowed for other hosts and errors.EnrolError for pages of other people's tracks
    (likes, reposts) or pages that are no list of tracks.
    """
    parts = split_url(url)
    if parts is None or not is_allowed_url(url, extra_hosts):
        raise errors.NotAllowed(detail=f"host {parts.hostname if parts else '?'}")
    host = parts.hostname.rstrip(".")
    segments = [s for s in parts.path.split("/") if s]
    if host in SOUNDCLOUD_HOSTS:
        if host != "soundcloud.com" and host not in ("www.soundcloud.com", "m.soundcloud.com"):
            return None
        if not segments or segments[0].lower() in _SC_RESERVED or not _SC_SLUG.fullmatch(segments[0]):
            return None
        artist = segments[0]
        if len(segments) == 1:
            return Page("soundcloud", f"https://soundcloud.com/{artist}/tracks")
        tab = segments[1].lower()
        if tab in ("likes", "reposts", "followers", "following", "comments"):
            raise errors.EnrolError(f"soundcloud.com/{artist}/{tab} lists other people's tracks. Give the "
                                    f"artist's own page: https://soundcloud.com/{artist}")
        if tab in ("tracks", "albums", "sets", "popular-tracks") and len(segments) == 2:
            return Page("soundcloud", f"https://soundcloud.com/{artist}/{tab}")
        if tab == "sets" and all(_SC_SLUG.fullmatch(s) for s in segments[2:4]):
            return Page("soundcloud", "https://soundcloud.com/" + "/".join(segments[:4]))
        return None
    if host in YOUTUBE_HOSTS:
        pairs = _pairs(parts.query)
        first = segments[0] if segments else ""
        if first.lower() == "playlist" and (lid := _first(pairs, "list")) and _YT_LIST.fullmatch(lid):
            return Page("youtube", f"https://www.youtube.com/playlist?list={lid}")
        if _YT_HANDLE.fullmatch(first) or (first in _YT_CHANNEL and len(segments) >= 2):
            base = segments[:1] if first.startswith("@") else segments[:2]
            rest = segments[len(base):]
            tab = rest[0].lower() if rest else "videos"
            if tab in ("featured", "home"):
                tab = "videos"
            if tab not in _PAGE_TABS or not all(re.fullmatch(r"[\w.@-]+", s) for s in base):
                raise errors.EnrolError(f"I enrol a channel's videos or streams, not its {tab}. Give "
                                        "https://www.youtube.com/@NAME (its uploads) or a playlist link.")
            return Page("youtube", "https://www.youtube.com/" + "/".join([*base, tab]))
        return None
    if parts.path.lower().endswith(_MEDIA_SUFFIXES):
        return None                                     # a media file is one track; anything else may list some
    return Page("extra", urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path or "/", parts.query, "")))


_MEDIA_SUFFIXES = (".mp3", ".m4a", ".aac", ".ogg", ".oga", ".opus", ".wav", ".flac", ".webm", ".mp4", ".mka")
