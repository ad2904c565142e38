"""bot/core.py through a tiny in-test platform: what the core asks of a platform, and when.

`Chat` is the smallest `Reply` there can be: it records each call (acknowledge, progress, finish, send) and
keeps the files it was given. The classifier is the protocol stand-in from tests/fakes/classifier.py, the
history is real SQLite on disk and charts are really drawn. The real platforms (tests/test_telegram*.py,
tests/test_discord*.py) stay the end-to-end proof; these tests pin the shared rules in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from pathlib import Path
from typing import Any, Iterator

import pytest

from bot import replies
from bot.core import CHART_NAME, BotCore, Button, Post, Reply
from bot.media import Clip
from classifier import errors
from classifier.serve.api import ProgressCallback, Query
from classifier.settings import Settings
from classifier.sources.links import Source
from classifier.store.history import History
from tests.fakes.classifier import StubClassifier, canned_verdict

YT = "https://youtu.be/dQw4w9WgXcQ"
PNG = b"\x89PNG\r\n\x1a\n"


class Chat(Reply):
    """A platform that records what the core asked of it. `broken`: every finish and send fails."""

    errors = (ConnectionError,)
    edit_interval_s = 0.0

    def __init__(self, key: int = 1, *, chat: str = "chat-1", user: str = "ada", must_answer: bool = False,
                 broken: bool = False) -> None:
        super().__init__(key, chat=chat, user=user, job_id=f"test-{key}")
        self.must_answer = must_answer
        self.broken = broken
        self.seen: list[tuple[str, Any]] = []
        self.status: str | None = None
        self.files: dict[str, bytes | None] = {}

    @property
    def message_id(self) -> str | None:
        return "status-1" if self.status is not None else None

    @property
    def acknowledged(self) -> bool:
        return self.status is not None

    async def acknowledge(self) -> str:
        self.status = replies.LISTENING
        self.seen.append(("ack", self.status))
        return self.status

    async def progress(self, text: str) -> None:
        self.seen.append(("progress", text))

    async def finish(self, post: Post) -> str | None:
        return await self._out("finish", post, "answer-2")

    async def send(self, post: Post) -> str | None:
        return await self._out("send", post, "sent-3")

    async def _out(self, what: str, post: Post, message_id: str) -> str:
        if self.broken:
            raise ConnectionError("the chat is gone")
        for file in post.files:
            self.files[file.name] = await file.load()
        self.seen.append((what, post))
        return message_id

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.seen]


class Listening(StubClassifier):
    """The stub, noting what the clip on disk looked like while it was being classified."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.on_disk: list[tuple[Path, bytes]] = []

    async def identify(self, query: Query, progress: ProgressCallback | None = None) -> Any:
        if query.path is not None:
            self.on_disk.append((query.path, query.path.read_bytes()))
        return await super().identify(query, progress)


def _clip(data: bytes, *, kind: str = "audio file", name: str | None = "set.mp3", mime: str | None = "audio/mpeg",
          size: int | None = None, duration_s: float | None = 20.0, start_s: float | None = None,
          saved: list[Path] | None = None) -> Clip:
    async def save(path: Path, max_bytes: int) -> None:
        if saved is not None:
            saved.append(path)
        path.write_bytes(data)

    return Clip(kind, name, mime, len(data) if size is None else size, duration_s, save, start_s)


@pytest.fixture
def history(tmp_path: Path) -> Iterator[History]:
    h = History(tmp_path / "history.sqlite3")
    yield h
    h.close()


async def _answer_with_progress(core: BotCore, chat: Chat, gate: asyncio.Event, what: Any) -> None:
    """Run a job; let the classifier finish only once its progress edit has reached the chat."""
    task = asyncio.create_task(core.answer(chat, "identify", what))
    while not any(kind == "progress" and "Analysing" in text for kind, text in chat.seen):
        assert not task.done(), task
        await asyncio.sleep(0.01)
    gate.set()
    await task


# --- jobs ----------------------------------------------------------------------------------------------------

async def test_a_link_is_acknowledged_shown_in_progress_and_answered_with_chart_button_and_record(
        settings: Settings, history: History, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bot.core")
    gate = asyncio.Event()
    core = BotCore("test", settings, StubClassifier(gate=gate), history)
    chat = Chat()
    await _answer_with_progress(core, chat, gate, core.source(f"{YT}?t=95"))
    assert chat.kinds() == ["ack", "progress", "finish"]
    assert chat.seen[1][1] == replies.progress_text("analysing", 0, 10)
    post = chat.seen[2][1]
    assert post.answer is not None and post.answer.title == "🎧 I think this is Deep Pulse."
    assert post.buttons == (Button(replies.WRONG, "wrong:1", "✏️"),)
    assert [f.name for f in post.files] == [CHART_NAME] and post.files[0].image
    assert chat.files[CHART_NAME][:8] == PNG                           # type: ignore[index]
    record = await history.get(1)
    assert record is not None and (record.platform, record.chat, record.user) == ("test", "chat-1", "ada")
    assert record.source.startswith("https://www.youtube.com/watch?v=dQw4w9WgXcQ")
    assert record.message == "answer-2", "the answer went out as another message than the status: kept"
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("job ")]
    assert line.startswith("job test-1 chat=chat-1 identify source=www.youtube.com seconds=30.0 slices=10 "
                           "answer=identified"), line


async def test_a_genre_answer_has_no_button_and_nothing_is_recorded_without_a_history(settings: Settings) -> None:
    core = BotCore("test", settings, StubClassifier())
    chat = Chat()
    await core.answer(chat, "genre", core.source(YT))
    post = chat.seen[-1][1]
    assert post.answer is not None and post.answer.kind == "genre" and post.buttons == ()


async def test_a_clip_is_saved_in_a_folder_of_its_own_which_is_gone_afterwards(settings: Settings) -> None:
    gate = asyncio.Event()
    clf = Listening(gate=gate)
    core = BotCore("test", settings.replace(max_clip_seconds=120.0), clf)
    chat = Chat()
    saved: list[Path] = []
    clip = _clip(b"ID3" + bytes(500), duration_s=600.0, start_s=30.0, saved=saved)
    await _answer_with_progress(core, chat, gate, clip)
    (path,) = saved
    assert clf.on_disk == [(path, b"ID3" + bytes(500))] and path.suffix == ".mp3"
    assert not path.exists() and not path.parent.exists()
    (query,) = clf.queries
    assert (query.path, query.at, query.duration_s, query.label) == (path, 30.0, 120.0, "set.mp3")
    assert chat.seen[1:3] == [("progress", replies.progress_text("downloading")),
                              ("progress", replies.progress_text("analysing", 0, 10))]
    assert chat.seen[-1][1].answer.note == "I listened to 2 min from 0:30."


@pytest.mark.parametrize("clip, code, text", [
    (_clip(b"%PDF", kind="file", name="flyer.pdf", mime="application/pdf"), "undecodable",
     replies.not_audio("flyer.pdf", "application/pdf")),
    (_clip(b"", kind="voice note", name=None), "undecodable", replies.empty_file("voice note")),
    (_clip(b"ID3", size=50_000), "too_large", replies.file_too_big(50_000, 10_000)),
])
async def test_what_cannot_work_is_refused_before_anything_is_acknowledged_or_saved(
        settings: Settings, clip: Clip, code: str, text: str) -> None:
    clf = StubClassifier()
    core = BotCore("test", settings.replace(max_file_bytes=10_000), clf)
    chat = Chat()
    with pytest.raises(errors.SpyError) as info:
        await core.answer(chat, "identify", clip)
    assert (info.value.code, info.value.user_message) == (code, text)
    assert chat.seen == [] and not clf.queries


async def test_a_file_bigger_than_it_said_is_refused_after_the_download_and_removed(settings: Settings) -> None:
    clf = StubClassifier()
    core = BotCore("test", settings.replace(max_file_bytes=1000), clf)
    chat = Chat()
    saved: list[Path] = []
    with pytest.raises(errors.DownloadTooLarge) as info:
        await core.answer(chat, "identify", _clip(b"x" * 1001, size=10, saved=saved))
    assert info.value.user_message == replies.file_too_big(1001, 1000)
    assert not saved[0].parent.exists() and not clf.queries
    await core.fail(chat.key, info.value, None)         # the boundary tells it in place of the status
    assert chat.seen[-1] == ("finish", Post(text=replies.file_too_big(1001, 1000)))


async def test_a_cancelled_job_leaves_no_folder_and_no_live_status(settings: Settings) -> None:
    core = BotCore("test", settings, StubClassifier(gate=asyncio.Event()))
    chat, saved = Chat(), []
    task = asyncio.create_task(core.answer(chat, "identify", _clip(b"OggS" + bytes(99), saved=saved)))
    while len(chat.seen) < 3:             # acknowledged, downloaded, analysing: held by the gate
        await asyncio.sleep(0.01)
    assert saved[0].exists() and core.jobs.running() == 1
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert not saved[0].parent.exists() and core.jobs.running() == 0
    other = Chat(2)
    await core.fail(chat.key, errors.BadSource(), other)      # no job left under that key: the fallback hears it
    assert other.kinds() == ["send"] and chat.kinds() == ["ack", "progress", "progress"]


# --- the one failure boundary ----------------------------------------------------------------------------------

async def test_a_failing_job_is_told_once_in_place_of_its_status(settings: Settings,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bot.core")
    core = BotCore("test", settings, StubClassifier(error=errors.ClassifierUnavailable(detail="refused")))
    chat, fallback = Chat(), Chat(1)
    with pytest.raises(errors.ClassifierUnavailable) as info:
        await core.answer(chat, "identify", core.source(YT))
    await core.fail(chat.key, info.value, fallback)
    assert chat.seen[-1] == ("finish", Post(text=errors.ClassifierUnavailable.default_message))
    assert fallback.seen == [], "the job's own status says it"
    assert "refused: classifier_down (refused)" in caplog.text


async def test_without_a_job_the_sentence_goes_privately_and_unknown_errors_stay_vague(
        settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bot.core")
    core = BotCore("test", settings, StubClassifier())
    refused, crashed = Chat(1), Chat(2)
    await core.fail(1, errors.BadSource(), refused)
    await core.fail(2, RuntimeError("internal detail 0xDEAD"), crashed)
    assert refused.seen == [("send", Post(text=errors.BadSource.default_message, private=True))]
    assert crashed.seen == [("send", Post(text=replies.GENERIC_ERROR, private=True))]
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1 and isinstance(tracebacks[0].exc_info[1], RuntimeError)  # type: ignore[index]


async def test_a_chat_that_cannot_be_told_is_logged_not_raised(settings: Settings,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    core = BotCore("test", settings, StubClassifier())
    await core.fail(1, errors.BadSource(), Chat(broken=True))
    assert "could not tell chat chat-1 about BadSource: the chat is gone" in caplog.text


async def test_a_failure_after_the_answer_does_not_replace_it(settings: Settings) -> None:
    core = BotCore("test", settings, StubClassifier())
    chat, fallback = Chat(), Chat(1)
    async with core.job(chat, core.source(YT)) as job:
        await job.finish(Post(text="the answer"))
        await core.fail(chat.key, RuntimeError("after the answer"), fallback)   # still inside the job
    assert chat.seen[-1] == ("finish", Post(text="the answer")) and fallback.kinds() == ["send"]


# --- what a request asks about, and who may ask ---------------------------------------------------------------

def test_a_message_asks_about_its_first_audio_clip_else_its_link(settings: Settings) -> None:
    core = BotCore("test", settings, StubClassifier())
    pdf = _clip(b"%PDF", kind="file", name="flyer.pdf", mime="application/pdf")
    mp3 = _clip(b"ID3", name="set.mp3")
    assert core.pick([pdf, mp3], YT) is mp3
    for text, hidden in ((f"see {YT}", []), ("see this", [YT])):     # a link in the text, or behind words
        source = core.pick([pdf], text, hidden)
        assert isinstance(source, Source) and source.url == "https://www.youtube.com/watch?v=dQw4w9WgXcQ"
    with pytest.raises(errors.Undecodable, match="flyer.pdf"):
        core.pick([pdf], "see you there")
    with pytest.raises(errors.BadSource):
        core.pick([], "nice party")
    source = core.source(f"{YT} 1:02:03")
    assert source.start_s == 3723.0 and core.source(f"{YT} 1:02:03", at="5").start_s == 5.0
    assert core.source("/identify 1:02", reply_text=f"this one {YT}").start_s == 62.0


def test_a_flood_is_told_once_unless_every_request_must_be_answered(settings: Settings) -> None:
    core = BotCore("test", settings.replace(user_requests_per_minute=1), StubClassifier())
    quiet, loud = Chat(user="ada"), Chat(user="bob", must_answer=True)
    assert core.admit(quiet) and core.admit(loud)
    with pytest.raises(errors.Busy):
        core.admit(quiet)
    assert core.admit(quiet) is False, "told once: then quiet"
    for _ in range(2):
        with pytest.raises(errors.Busy):
            core.admit(loud)


# --- history -----------------------------------------------------------------------------------------------------

async def test_history_comes_a_page_at_a_time_with_buttons_only_when_it_needs_them(settings: Settings,
                                                                                     history: History) -> None:
    for i in range(25):
        history.store.add(platform="test", chat="c", user="1", source=f"clip-{i:02d}.mp3",
                          result=canned_verdict(f"clip-{i:02d}.mp3"), now=1_700_000_000.0 + i)
    core = BotCore("test", settings, StubClassifier(), history)
    first = await core.history_post("c", 25)
    last = await core.history_post("c", 25, 20)
    short = await core.history_post("c", 3)
    assert first.private and first.card
    assert [(b.label, b.action, b.disabled) for b in first.buttons] == [
        (replies.NEWER, "history:25:0", True), (replies.OLDER, "history:25:10", False)]
    assert [(b.action, b.disabled) for b in last.buttons] == [("history:25:10", False), ("history:25:30", True)]
    assert short.buttons == ()
    lines = first.body(replies.PLAIN)[0].splitlines()
    assert lines[0] == "🕘 Answers 1–10 of 25 in this chat, newest first:" and len(lines) == 11
    assert lines[1].startswith("1. ") and "clip-24.mp3" in lines[1] and "clip-15.mp3" in lines[-1]
    final = last.body(replies.PLAIN)[0].splitlines()[-1]
    assert final.startswith("25. ") and "clip-00.mp3" in final


async def test_corrections_stay_in_their_chat_and_members_can_be_forgotten(settings: Settings,
                                                                           history: History) -> None:
    core = BotCore("test", settings, StubClassifier(), history)
    await core.answer(Chat(), "identify", core.source(YT))
    chat = Chat(2, user="bob")
    await core.correct(chat, 1, "  Real   Artist ")
    (kind, thanks), = chat.seen
    assert kind == "send" and thanks.private
    assert thanks.body(replies.HTML) == ("✏️ Thanks, noted: answer #1 is <b>Real Artist</b>. The operator reviews "
                                         "corrections before the model learns from them.", True)
    with pytest.raises(errors.BadRequest, match="can't find that answer"):
        await core.correct(Chat(3, chat="elsewhere"), 1, "Someone")
    with pytest.raises(errors.BadRequest, match=replies.RECORD_GONE):
        await core.record_in("elsewhere", 1)
    assert (await core.record_in("chat-1", 1)).correction == "Real Artist"

    ada = Chat(4)
    await core.forget_me(ada)
    await core.forget_me(ada)
    assert [post.body(replies.PLAIN)[0] for _, post in ada.seen] == [replies.forgotten(1), replies.forgotten(0)]
    with pytest.raises(errors.BadRequest, match=replies.WHO_ARE_YOU):
        await core.forget_me(Chat(5, user=""))


async def test_without_a_history_its_commands_say_so(settings: Settings) -> None:
    core = BotCore("test", settings, StubClassifier())
    for call in (core.history_post("c", 10), core.correct(Chat(), 1, "x"), core.forget_me(Chat())):
        with pytest.raises(errors.BadRequest, match=replies.HISTORY_OFF):
            await call


async def test_a_history_that_cannot_write_does_not_hold_back_the_answer(settings: Settings, history: History,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    with contextlib.closing(sqlite3.connect(history.store.path)) as conn:
        conn.execute("DROP TABLE history")          # a real SQLite failure: every write now fails
    core = BotCore("test", settings, StubClassifier(), history)
    chat = Chat()
    await core.answer(chat, "identify", core.source(YT))
    post = chat.seen[-1][1]
    assert post.answer is not None and post.buttons == (), "no record, so nothing to correct"
    assert "history: could not write for job test-1" in caplog.text
