"""Rejected input on Telegram: each bad input, its error code, and the sentence the chat sees.

The real PTB Application against the loopback Bot API; the classifier is real where the refusal comes
from it (a PDF renamed .mp3) and a stand-in at the protocol boundary where the point is the front end.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from pathlib import Path
from typing import Any

import pytest

from bot import replies
from bot.__main__ import run
from classifier import errors
from classifier.serve.engine import Engine
from classifier.serve.remote import RemoteClassifier
from classifier.settings import Settings
from spy.cli import main as cli_main
from tests.fakes.classifier import StubClassifier, down
from tests.fakes.telegram_api import FakeBotAPI, bot_running

YT = "https://youtu.be/dQw4w9WgXcQ"


async def _one_reply(api: FakeBotAPI, chat_id: int, n: int = 1) -> list[str]:
    await api.wait_for(lambda: len(api.replies(chat_id)) >= n, timeout=30)
    await api.settle()
    return api.replies(chat_id)


# --- files ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, expected, code", [
    ({"data": b"%PDF-1.4 ...", "file_name": "setlist.pdf", "mime_type": "application/pdf"},
     replies.not_audio("setlist.pdf", "application/pdf"), "undecodable"),
    ({"data": b"\x89PNG....", "file_name": "cover.png", "mime_type": "image/png"},
     replies.not_audio("cover.png", "image/png"), "undecodable"),
    ({"data": b"x" * 50_000, "file_name": "set.mp3", "mime_type": "audio/mpeg"},
     replies.file_too_big(50_000, 10_000), "too_large"),
    ({"data": b"", "file_name": "nothing.mp3", "mime_type": "audio/mpeg"},
     replies.empty_file("file"), "undecodable"),
])
async def test_documents_refused_before_a_byte_is_downloaded(settings: Settings, kwargs: dict[str, Any],
                                                            expected: str, code: str,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    clf = StubClassifier()
    caplog.set_level(logging.INFO, logger="bot")
    async with FakeBotAPI() as api, bot_running(api, settings.replace(max_file_bytes=10_000), clf):
        user = api.user()
        chat = api.private_chat(user)
        await api.send_document(chat, user, **kwargs)
        texts = await _one_reply(api, chat["id"])
    assert texts == [expected]
    assert not api.of("getFile") and not api.downloads and not clf.queries
    assert f"refused: {code}" in caplog.text


async def test_a_zero_byte_voice_note(settings: Settings) -> None:
    async with FakeBotAPI() as api, bot_running(api, settings, StubClassifier()):
        user = api.user()
        chat = api.private_chat(user)
        await api.send_voice(chat, user, b"")
        texts = await _one_reply(api, chat["id"])
    assert texts == ["That voice note is empty: there is nothing in it to listen to."]
    assert not api.of("getFile")


async def test_a_voice_note_over_the_size_limit(settings: Settings) -> None:
    async with FakeBotAPI() as api, bot_running(api, settings.replace(max_file_bytes=1 << 20), StubClassifier()):
        user = api.user()
        chat = api.private_chat(user)
        await api.send_voice(chat, user, b"OggS", size=25 << 20)
        texts = await _one_reply(api, chat["id"])
    assert texts == ["That file is 25 MB; I can download up to 1 MB. Send a shorter piece, or a link."]
    assert not api.of("getFile")


async def test_the_cloud_api_refusing_a_big_file_is_explained(settings: Settings) -> None:
    """A document without a size passes the early check; the cloud Bot API then refuses to serve it."""
    async with FakeBotAPI() as api, bot_running(api, settings, StubClassifier()):
        user = api.user()
        chat = api.private_chat(user)
        api.fail_next("getFile", code=400, description="Bad Request: file is too big")
        await api.send_document(chat, user, b"ID3...", file_name="mix.mp3", mime_type="audio/mpeg", with_size=False)
        await api.wait_for(lambda: len(api.of("editMessageText")) >= 2, timeout=30)
        await api.settle()
    assert api.replies(chat["id"]) == [replies.LISTENING]
    assert api.of("editMessageText")[-1].text == replies.file_too_big(None, settings.max_file_bytes)
    assert not api.downloads


async def test_a_pdf_renamed_mp3_is_downloaded_and_refused_by_the_decoder(trained5: Settings,
                                                                          audio_dir: Path) -> None:
    clf = Engine(trained5)
    try:
        async with FakeBotAPI() as api, bot_running(api, trained5, clf):
            user = api.user()
            chat = api.private_chat(user)
            await api.send_document(chat, user, (audio_dir / "song.mp3").read_bytes(), file_name="song.mp3",
                                    mime_type="audio/mpeg")
            await api.wait_for(lambda: api.of("editMessageText") and api.of("editMessageText")[-1].text
                               == errors.Undecodable.default_message, timeout=60)
            await api.settle()
    finally:
        await clf.aclose()
    assert api.conversation(chat["id"]) == [("send", replies.LISTENING),
                                            ("edit", replies.progress_text("downloading")),
                                            ("edit", errors.Undecodable.default_message)]
    assert api.downloads == ["documents/song.mp3"]


# --- links and commands -------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("listen https://example.com/track.mp3", errors.NotAllowed.default_message),
    ("https://www.youtube.com/playlist?list=PL0123456789", errors.PlaylistRefused.default_message),
    ("hello there", errors.BadSource.default_message),
    ("/identify", replies.usage("identify")),
    ("/genre", replies.usage("genre")),
    (f"/identify {YT} 1:99", "I could not read the time “1:99”. Write it like 1:02:03, 62:03 or 1h2m3s."),
    ("/identify https://soundcloud.com/someone", "That is a SoundCloud profile, not a track. Open the track "
                                                "and paste its link."),
])
async def test_links_and_commands_that_cannot_work(settings: Settings, text: str, expected: str) -> None:
    clf = StubClassifier()
    async with FakeBotAPI() as api, bot_running(api, settings, clf):
        user = api.user()
        chat = api.private_chat(user)
        await api.send_text(chat, user, text)
        texts = await _one_reply(api, chat["id"])
    assert texts == [expected]
    assert not clf.queries


async def test_a_reply_command_on_a_message_without_audio(settings: Settings) -> None:
    async with FakeBotAPI() as api, bot_running(api, settings, StubClassifier()):
        user = api.user()
        chat = api.private_chat(user)
        chatter = await api.send_text(chat, user, "nice party")
        await _one_reply(api, chat["id"])
        await api.send_text(chat, user, "/genre", reply_to=chatter)
        texts = await _one_reply(api, chat["id"], 2)
    assert texts == [errors.BadSource.default_message] * 2


# --- floods and load --------------------------------------------------------------------------------------

async def test_a_flood_from_one_user_is_told_once_to_slow_down(settings: Settings) -> None:
    clf = StubClassifier()
    s = settings.replace(user_requests_per_minute=3, max_jobs_per_chat=10)
    async with FakeBotAPI() as api, bot_running(api, s, clf):
        user = api.user()
        chat = api.private_chat(user)
        for i in range(6):
            await api.send_text(chat, user, f"{YT}?t={i}")
        await api.wait_for(lambda: len(api.of("sendPhoto")) == 3, timeout=30)
        await api.settle()
        other = api.user(222, "Bob")                # someone else is not slowed down by Ada's flood
        await api.send_text(api.private_chat(other), other, YT)
        await api.wait_for(lambda: api.of("sendPhoto", 222), timeout=30)
    texts = api.replies(chat["id"])
    slow = [t for t in texts if t.startswith("Slow down")]
    assert len(slow) == 1 and texts.count(replies.LISTENING) == 3
    assert re.search(r"a minute for each person\. Try again in (5\d s|1 min)\.$", slow[0]), slow
    assert [q.source.start_s for q in clf.queries[:3]] == [0.0, 1.0, 2.0]


async def test_one_chat_cannot_take_every_worker(settings: Settings) -> None:
    gate = asyncio.Event()
    clf = StubClassifier(gate=gate)
    s = settings.replace(max_jobs_per_chat=1, max_jobs_total=2)
    async with FakeBotAPI() as api, bot_running(api, s, clf):
        ada, bob, cy = api.user(1, "Ada"), api.user(2, "Bob"), api.user(3, "Cy")
        ada_chat = api.private_chat(ada)
        await api.send_text(ada_chat, ada, YT)
        await api.wait_for(lambda: len(clf.queries) == 1)
        await api.send_text(ada_chat, ada, YT + "?t=5")                     # same chat: refused
        await api.send_text(api.private_chat(bob), bob, YT)                  # another chat: fine
        await api.wait_for(lambda: len(clf.queries) == 2 and len(api.replies(1)) == 2)
        await api.send_text(api.private_chat(cy), cy, YT)                    # all workers busy: refused
        await api.wait_for(lambda: api.replies(3))
        gate.set()
        await api.wait_for(lambda: len(api.of("sendPhoto")) == 2)
    assert api.replies(1)[1].startswith("I'm already listening to a clip from this chat. Let me finish first. "
                                        "Try again in ")
    assert api.replies(3)[0].startswith("I'm listening to a lot of music right now. Try again in ")


# --- the classifier fails -----------------------------------------------------------------------------------

async def test_a_classifier_that_is_down(settings: Settings) -> None:
    async with FakeBotAPI() as api, bot_running(api, settings, down()):
        user = api.user()
        chat = api.private_chat(user)
        await api.send_voice(chat, user, b"OggS" + bytes(1000))
        await api.wait_for(lambda: api.of("editMessageText") and api.of("editMessageText")[-1].text
                           == errors.ClassifierUnavailable.default_message)
        await api.settle()
    assert api.replies(chat["id"]) == [replies.LISTENING], "the status message says it; no second message"
    assert not api.of("sendPhoto")


async def test_a_remote_classifier_at_a_closed_port(settings: Settings) -> None:
    with socket.socket() as sock:                    # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # One attempt: the client's reconnect back-off (0.5 + 1 + 2 s) is its own business, not this test's.
    clf = RemoteClassifier(settings.replace(classifier_url=f"http://127.0.0.1:{port}"), attempts=1)
    try:
        async with FakeBotAPI() as api, bot_running(api, settings, clf):
            user = api.user()
            chat = api.private_chat(user)
            await api.send_text(chat, user, YT)
            await api.wait_for(lambda: api.of("editMessageText") and api.of("editMessageText")[-1].text
                               == errors.ClassifierUnavailable.default_message, timeout=30)
    finally:
        await clf.aclose()


async def test_an_unexpected_exception_is_logged_once_and_answered_generically(
        settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    clf = StubClassifier(error=RuntimeError("internal detail 0xDEAD"))
    async with FakeBotAPI() as api, bot_running(api, settings, clf):
        user = api.user()
        chat = api.private_chat(user)
        await api.send_text(chat, user, YT)
        await api.wait_for(lambda: api.of("editMessageText") and api.of("editMessageText")[-1].text
                           == replies.GENERIC_ERROR)
        await api.send_text(chat, user, "/help")             # and the bot is still there
        await api.wait_for(lambda: len(api.replies(chat["id"])) == 2)
    tracebacks = [r for r in caplog.records if r.exc_info and isinstance(r.exc_info[1], RuntimeError)]
    assert len(tracebacks) == 1 and tracebacks[0].name == "bot.core"
    assert all("0xDEAD" not in c.text for c in api.calls if c.text)


# --- start-up -------------------------------------------------------------------------------------------------

async def test_a_rejected_token_stops_start_up_without_printing_it(settings: Settings) -> None:
    async with FakeBotAPI() as api:
        bad = api.settings(settings).replace(telegram_token="999:not-the-right-token")
        with pytest.raises(errors.Unauthorized) as info:
            await run(bad, classifier=StubClassifier(), stop=asyncio.Event())
    assert "not-the-right-token" not in str(info.value) and info.value.__cause__ is None
    assert info.value.__suppress_context__


def test_spy_bot_without_tokens_says_what_to_set(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("TELEGRAM_TOKEN", "DISCORD_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)                      # no .env here
    assert cli_main(["bot"]) == 2
    assert "set TELEGRAM_TOKEN and/or DISCORD_TOKEN" in capsys.readouterr().err
