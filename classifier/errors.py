"""The exception tree: every failure a user can cause or meet, with a stable code and a friendly sentence.

    SpyError                      code            HTTP
    ├── BadSource                 bad_source      400   not a link we understand
    │   ├── NotAllowed            not_allowed     400   a host outside the allowlist
    │   ├── MissingFile           no_such_file    400   a local path that does not exist
    │   ├── PlaylistRefused       playlist        400   a playlist / set without one track
    │   ├── BadTime               bad_time        400   a time that cannot be read ("1:99")
    │   │   └── TwoTimes          two_times       400   two different times typed in one message
    │   └── TextTooLong           text_too_long   400   a message or link longer than the parser reads
    ├── FetchFailed               fetch_failed    502   the platform would not give us the audio
    │   ├── Private               private         422
    │   ├── Removed               removed         422
    │   ├── AgeRestricted         age_restricted  422
    │   ├── GeoBlocked            geo_blocked     422
    │   ├── LiveStream            live            422
    │   ├── BotCheck              bot_check       503   "Sign in to confirm you're not a bot"
    │   ├── MediaTooLong          media_too_long  422   longer than max_media_seconds
    │   ├── DownloadTooLarge      too_large       413   more bytes than max_fetch_bytes
    │   └── FetchTimeout          fetch_timeout   504
    ├── BadAudio                  bad_audio       422   we have bytes but cannot use them
    │   ├── Undecodable           undecodable     422   not audio, corrupt, empty
    │   ├── TooShort              too_short       422
    │   ├── AudioTooLong          audio_too_long  422
    │   └── Silent                silent          422
    ├── NoModel                   no_model        503   nobody enrolled/trained artists yet
    ├── EnrolError                enrol_error     400   a bad enrolment row or argument
    ├── Busy                      busy            429   rate limit or full queue (has retry_after_s)
    ├── Unauthorized              unauthorized    401
    ├── BadRequest                bad_request     400   malformed API request
    │   ├── BodyTooLarge          body_too_large  413   a request body over the service's max_body_bytes
    │   └── UnsupportedMedia      unsupported_media 415 a content type the service does not take
    ├── DeadlineExceeded          deadline        504   a service job ran past request_deadline_s
    └── ClassifierUnavailable     classifier_down 503   the remote classifier cannot be reached

Library errors are wrapped at the edge (`raise Undecodable(...) from exc`); one boundary per process
(CLI main, service middleware, bot error handlers) logs the traceback once and shows `user_message`.
"""

from __future__ import annotations

__all__ = [
    "SpyError", "BadSource", "NotAllowed", "MissingFile", "PlaylistRefused", "BadTime", "TwoTimes", "TextTooLong",
    "FetchFailed", "Private", "Removed",
    "AgeRestricted", "GeoBlocked", "LiveStream", "BotCheck", "MediaTooLong", "DownloadTooLarge",
    "FetchTimeout", "BadAudio", "Undecodable", "TooShort", "AudioTooLong", "Silent", "NoModel",
    "EnrolError", "Busy", "Unauthorized", "BadRequest", "BodyTooLarge", "UnsupportedMedia", "DeadlineExceeded",
    "ClassifierUnavailable", "by_code",
]


class SpyError(Exception):
    """Base of every error the product reports to a user."""

    code: str = "error"
    http_status: int = 500
    default_message: str = "Something went wrong on my side. Please try again in a moment."

    def __init__(self, message: str | None = None, *, detail: str | None = None) -> None:
        self.user_message = message or self.default_message
        self.detail = detail  # for logs only; may be technical, never shown to chat users
        super().__init__(self.user_message)

    def to_dict(self) -> dict[str, object]:
        return {"error": self.code, "message": self.user_message}


class BadSource(SpyError):
    code, http_status = "bad_source", 400
    default_message = "I could not find a YouTube or SoundCloud link in that. Paste a track link, or send an audio file."


class NotAllowed(BadSource):
    code = "not_allowed"
    default_message = "I only fetch audio from YouTube and SoundCloud. Send the audio as a file instead."


class MissingFile(BadSource):
    code = "no_such_file"
    default_message = "I can't find that file."


class PlaylistRefused(BadSource):
    code = "playlist"
    default_message = ("That is a playlist or a set. Open the single track you mean and paste its link "
                       "(add ?t=1h02m03s for a moment in a long mix).")


class BadTime(BadSource):
    code = "bad_time"
    default_message = "I could not read that time. Write it like 1:02:03, 62:03 or 1h2m3s."


class TwoTimes(BadTime):
    """Two different times in one message: the front end asks which one (`times_s`, in the order typed;
    `source` is the link understood, without a start, so a reply can offer one button per time)."""

    code = "two_times"
    default_message = "You wrote two different times. Which one do you mean? Send the link again with just one."

    def __init__(self, message: str | None = None, *, times_s: tuple[float, ...] = (), source: object = None,
                 detail: str | None = None) -> None:
        super().__init__(message, detail=detail)
        self.times_s = times_s
        self.source = source

    def to_dict(self) -> dict[str, object]:
        return {**super().to_dict(), "times_s": list(self.times_s)}


class TextTooLong(BadSource):
    code = "text_too_long"
    default_message = "That message is too long for me to read. Send just the link (and a time, if you like)."


class FetchFailed(SpyError):
    code, http_status = "fetch_failed", 502
    default_message = "I could not get the audio from that link. Check that it plays in a browser, then try again."


class Private(FetchFailed):
    code, http_status = "private", 422
    default_message = "That track is private, so I cannot hear it. Send the audio as a file instead."


class Removed(FetchFailed):
    code, http_status = "removed", 422
    default_message = "That track is gone: it was removed or never existed."


class AgeRestricted(FetchFailed):
    code, http_status = "age_restricted", 422
    default_message = "That video is age-restricted, and I don't sign in anywhere. Send the audio as a file instead."


class GeoBlocked(FetchFailed):
    code, http_status = "geo_blocked", 422
    default_message = "That track is not available in the country I run from. Send the audio as a file instead."


class LiveStream(FetchFailed):
    code, http_status = "live", 422
    default_message = "That is a live stream. Send me the link once the recording is up (with a ?t= timestamp)."


class BotCheck(FetchFailed):
    code, http_status = "bot_check", 503
    default_message = "YouTube is asking me to prove I'm not a bot right now. Try again later, or send the audio as a file."


class MediaTooLong(FetchFailed):
    code, http_status = "media_too_long", 422
    default_message = "That recording is longer than I handle. Send a shorter piece, or the audio as a file."


class DownloadTooLarge(FetchFailed):
    code, http_status = "too_large", 413
    default_message = "That download grew larger than I allow. Send a shorter piece, or the audio as a file."


class FetchTimeout(FetchFailed):
    code, http_status = "fetch_timeout", 504
    default_message = "The site took too long to answer. Try again in a moment."


class BadAudio(SpyError):
    code, http_status = "bad_audio", 422
    default_message = "I could not use that audio."


class Undecodable(BadAudio):
    code = "undecodable"
    default_message = "That file does not contain audio I can read. Send an MP3, M4A, OGG, WAV or a voice note."


class TooShort(BadAudio):
    code = "too_short"
    default_message = "That clip is too short: send me at least 3 seconds of music."


class AudioTooLong(BadAudio):
    code = "audio_too_long"
    default_message = "That audio is longer than I handle. Send a shorter piece."


class Silent(BadAudio):
    code = "silent"
    default_message = "That clip is silent: I hear nothing to identify."


class NoModel(SpyError):
    code, http_status = "no_model", 503
    default_message = ("No artists are enrolled yet. The operator enrols tracks with `spy enrol ARTIST FILES...` "
                       "and trains with `spy train`.")


class EnrolError(SpyError):
    code, http_status = "enrol_error", 400
    default_message = "That enrolment request is not valid."


class Busy(SpyError):
    code, http_status = "busy", 429
    default_message = "I'm busy right now. Try again in a moment."

    def __init__(self, message: str | None = None, *, retry_after_s: float = 5.0, detail: str | None = None) -> None:
        super().__init__(message, detail=detail)
        self.retry_after_s = retry_after_s

    def to_dict(self) -> dict[str, object]:
        return {**super().to_dict(), "retry_after_s": self.retry_after_s}


class Unauthorized(SpyError):
    code, http_status = "unauthorized", 401
    default_message = "Missing or wrong token."


class BadRequest(SpyError):
    code, http_status = "bad_request", 400
    default_message = "That request is not valid."


class BodyTooLarge(BadRequest):
    code, http_status = "body_too_large", 413
    default_message = "That file is larger than I accept. Send a shorter piece."


class UnsupportedMedia(BadRequest):
    code, http_status = "unsupported_media", 415
    default_message = "Send JSON with a link, or the audio itself (an audio content type or a multipart upload)."


class DeadlineExceeded(SpyError):
    code, http_status = "deadline", 504
    default_message = "That took longer than I allow right now. Try again in a moment."


class ClassifierUnavailable(SpyError):
    code, http_status = "classifier_down", 503
    default_message = "My listening service is down right now. Try again in a few minutes."


def _all_subclasses(cls: type[SpyError]) -> list[type[SpyError]]:
    out = [cls]
    for sub in cls.__subclasses__():
        out.extend(_all_subclasses(sub))
    return out


def by_code(code: str) -> type[SpyError]:
    """The error class for a stable code (used by the remote client to re-raise service errors)."""
    for cls in _all_subclasses(SpyError):
        if cls.code == code:
            return cls
    return SpyError
