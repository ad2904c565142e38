"""Rejected input on Discord: each bad input, its error code, and the sentence the user sees.

The real discord.py client against the loopback gateway and REST API. What can be refused before any work
is answered at once with an ephemeral message (callback type 4, flag 64) and nothing is downloaded; what
fails later replaces the deferred response. What Discord's own client would refuse (a missing or unknown
option, a string too long, a number out of range) never reaches the bot: the stand-in refuses to build it.
"""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import Any

import pytest

from bot import replies
from bot.__main__ import run
from classifier import errors
from classifier.serve.engine import Engine
from classifier.settings import Settings
from tests.fakes.classifier import StubClassifier, down
from tests.fakes.discord_api import (  # noqa: F401 (fixture)
    Ask,
    FakeDiscord,
    Refused,
    discord_api_fixture,
    discord_running,
)

YT = "https://youtu.be/dQw4w9WgXcQ"
EPHEMERAL = 64
BAD_TIME = "I could not read the time “1:99”. Write it like 1:02:03, 62:03 or 1h2m3s."


def _ephemeral(ask: Ask) -> str:
    """The one immediate, ephemeral reply of a refused interaction (no deferral, no edits)."""
    assert ask.callback_type == 4, [(c.method, c.path) for c in ask.calls]
    data = ask.callback.body["data"]  # type: ignore[union-attr]
    assert data["flags"] == EPHEMERAL and not ask.edits
    return data["content"]


async def _final_text(ask: Ask) -> str:
    """The sentence that replaced a deferred response (no embed, no chart, no buttons)."""
    message = await ask.done()
    assert ask.callback_type == 5
    assert message["embeds"] == [] and message["attachments"] == [] and message["components"] == []
    return message["content"]


# --- files -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("data, name, mime, size, expected, code", [
    (b"%PDF-1.4 ...", "setlist.pdf", "application/pdf", None,
     replies.not_audio("setlist.pdf", "application/pdf"), "undecodable"),
    (b"\x89PNG....", "cover.png", "image/png", None, replies.not_audio("cover.png", "image/png"), "undecodable"),
    (b"", "nothing.mp3", "audio/mpeg", None, replies.empty_file("audio file"), "undecodable"),
    (b"ID3", "set.mp3", "audio/mpeg", 50_000, replies.file_too_big(50_000, 10_000), "too_large"),
])
async def test_files_refused_before_a_byte_is_downloaded(discord_api: FakeDiscord, settings: Settings, data: bytes,
                                                        name: str, mime: str, size: int | None, expected: str,
                                                        code: str, caplog: pytest.LogCaptureFixture) -> None:
    clf = StubClassifier()
    caplog.set_level(logging.INFO, logger="bot")
    async with discord_running(discord_api, settings.replace(max_file_bytes=10_000), clf):
        attachment = discord_api.attachment(data, name, mime, size=size)
        ask = await discord_api.slash("identify", discord_api.user(), file=attachment)
        await discord_api.wait_for(lambda: ask.callback)
        await discord_api.settle(0.1)
    assert _ephemeral(ask) == expected
    assert not discord_api.cdn_requests and not clf.queries
    assert f"refused: {code}" in caplog.text


async def test_an_empty_voice_message_from_the_context_menu(discord_api: FakeDiscord, settings: Settings) -> None:
    async with discord_running(discord_api, settings, StubClassifier()):
        ada = discord_api.user()
        voice = discord_api.attachment(b"", "voice-message.ogg", "audio/ogg", voice=True, duration=0.0)
        message = await discord_api.post(ada, attachments=[voice], dispatch=False)
        ask = await discord_api.context_menu(replies.CONTEXT_MENU, message, ada)
        await discord_api.wait_for(lambda: ask.callback)
    assert _ephemeral(ask) == "That voice message is empty: there is nothing in it to listen to."


async def test_a_pdf_renamed_mp3_is_downloaded_and_refused_by_the_decoder(discord_api: FakeDiscord,
                                                                          trained5: Settings,
                                                                          audio_dir: Path) -> None:
    clf = Engine(trained5)
    try:
        async with discord_running(discord_api, trained5, clf):
            song = discord_api.attachment((audio_dir / "song.mp3").read_bytes(), "song.mp3", "audio/mpeg")
            ask = await discord_api.slash("identify", discord_api.user(), file=song)
            text = await _final_text(ask)
    finally:
        await clf.aclose()
    assert text == errors.Undecodable.default_message
    assert [c.content for c in ask.edits] == [replies.progress_text("downloading"), text]
    assert discord_api.cdn_requests == [song["id"]]


async def test_an_attachment_gone_from_the_cdn(discord_api: FakeDiscord, settings: Settings) -> None:
    async with discord_running(discord_api, settings, StubClassifier()):
        mp3 = discord_api.attachment(b"ID3" + bytes(100), "gone.mp3", "audio/mpeg")
        del discord_api.attachments[mp3["id"]]
        ask = await discord_api.slash("identify", discord_api.user(), file=mp3)
        assert await _final_text(ask) == replies.download_failed("Discord")


async def test_a_message_without_audio_or_a_link(discord_api: FakeDiscord, settings: Settings) -> None:
    async with discord_running(discord_api, settings, StubClassifier()):
        ada = discord_api.user()
        chatter = await discord_api.post(ada, "nice party", dispatch=False)
        pdf = discord_api.attachment(b"%PDF", "flyer.pdf", "application/pdf")
        flyer = await discord_api.post(ada, "see you there", attachments=[pdf], dispatch=False)
        asks = [await discord_api.context_menu(replies.CONTEXT_MENU, m, ada) for m in (chatter, flyer)]
        await discord_api.wait_for(lambda: all(a.callback for a in asks))
    assert [_ephemeral(a) for a in asks] == [errors.BadSource.default_message,
                                             replies.not_audio("flyer.pdf", "application/pdf")]


# --- links and options ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("command, options, expected", [
    ("identify", {"link": "listen https://example.com/track.mp3"}, errors.NotAllowed.default_message),
    ("identify", {"link": "https://www.youtube.com/playlist?list=PL0123456789"},
     errors.PlaylistRefused.default_message),
    ("genre", {"link": "hello there"}, errors.BadSource.default_message),
    ("identify", {}, replies.option_usage("identify")),
    ("genre", {"at": "1:00"}, replies.option_usage("genre")),
    ("identify", {"link": YT, "at": "1:99"}, BAD_TIME),
    ("identify", {"link": f"{YT} 1:99"}, BAD_TIME),
    ("identify", {"link": "https://soundcloud.com/someone"},
     "That is a SoundCloud profile, not a track. Open the track and paste its link."),
    ("identify", {"link": YT, "file": "ATTACHMENT"}, replies.BOTH_GIVEN),
    ("genre", {"file": "ATTACHMENT", "at": "soon"}, "I could not read the time “soon”. Write it like 1:02:03, "
                                                    "62:03 or 1h2m3s."),
])
async def test_links_and_options_that_cannot_work(discord_api: FakeDiscord, settings: Settings, command: str,
                                                  options: dict[str, Any], expected: str) -> None:
    clf = StubClassifier()
    async with discord_running(discord_api, settings, clf):
        if options.get("file") == "ATTACHMENT":
            options = {**options, "file": discord_api.attachment(b"ID3" + bytes(100), "a.mp3", "audio/mpeg")}
        ask = await discord_api.slash(command, discord_api.user(), **options)
        await discord_api.wait_for(lambda: ask.callback)
    assert _ephemeral(ask) == expected
    assert not clf.queries and not discord_api.cdn_requests


@pytest.mark.parametrize("command, options, refusal", [
    ("identify", {"at": "1" * 33}, "33 characters"),
    ("identify", {"link": ""}, "0 characters"),
    ("identify", {"url": YT}, "no option 'url'"),
    ("identify", {"file": "https://example.com/a.mp3"}, "takes an uploaded file"),
    ("history", {"n": 0}, "out of range"),
    ("history", {"n": 201}, "out of range"),
    ("history", {"n": "ten"}, "is not a int"),
    ("shazam", {}, "no synced command 'shazam'"),
])
async def test_what_discord_itself_refuses_never_reaches_the_bot(discord_api: FakeDiscord, settings: Settings,
                                                                command: str, options: dict[str, Any],
                                                                refusal: str) -> None:
    async with discord_running(discord_api, settings, StubClassifier()):
        with pytest.raises(Refused, match=re.escape(refusal)):
            await discord_api.slash(command, discord_api.user(), **options)
    assert not discord_api.interactions


# --- floods and load ---------------------------------------------------------------------------------------------

async def test_a_flood_from_one_user_is_told_to_slow_down_each_time(discord_api: FakeDiscord,
                                                                    settings: Settings) -> None:
    clf = StubClassifier()
    s = settings.replace(user_requests_per_minute=3, max_jobs_per_chat=10)
    async with discord_running(discord_api, s, clf):
        ada, bob = discord_api.user(1, "ada"), discord_api.user(2, "bob")
        asks = [await discord_api.slash("identify", ada, link=f"{YT}?t={i}") for i in range(6)]
        await asyncio.gather(*(a.done() for a in asks))
        other = await discord_api.slash("identify", bob, link=YT)          # Bob is not slowed down by Ada
        await other.done()
    assert [a.callback_type for a in asks] == [5, 5, 5, 4, 4, 4]
    for ask in asks[3:]:
        assert re.fullmatch(r"Slow down a little: I listen 3 times a minute for each person\. "
                            r"Try again in (5\d s|1 min)\.", _ephemeral(ask))
    assert other.callback_type == 5
    assert [q.source.start_s for q in clf.queries[:3]] == [0.0, 1.0, 2.0] and len(clf.queries) == 4


async def test_one_channel_cannot_take_every_worker(discord_api: FakeDiscord, settings: Settings) -> None:
    gate = asyncio.Event()
    clf = StubClassifier(gate=gate)
    s = settings.replace(max_jobs_per_chat=1, max_jobs_total=2)
    async with discord_running(discord_api, s, clf):
        ada, bob, cy = discord_api.user(1, "ada"), discord_api.user(2, "bob"), discord_api.user(3, "cy")
        first = await discord_api.slash("identify", ada, link=YT)
        await discord_api.wait_for(lambda: len(clf.queries) == 1)
        same_channel = await discord_api.slash("identify", bob, link=YT)
        dm = await discord_api.slash("identify", bob, link=YT, dm=True)       # another channel: fine
        await discord_api.wait_for(lambda: len(clf.queries) == 2 and same_channel.callback)
        full = await discord_api.slash("identify", cy, link=YT, dm=True)       # every worker busy
        await discord_api.wait_for(lambda: full.callback)
        gate.set()
        await asyncio.gather(first.done(), dm.done())
    assert _ephemeral(same_channel).startswith("I'm already listening to a clip from this chat. Let me finish "
                                               "first. Try again in ")
    assert _ephemeral(full).startswith("I'm listening to a lot of music right now. Try again in ")


# --- the classifier fails ---------------------------------------------------------------------------------------

async def test_a_classifier_that_is_down(discord_api: FakeDiscord, settings: Settings) -> None:
    async with discord_running(discord_api, settings, down()):
        ask = await discord_api.slash("identify", discord_api.user(), link=YT)
        text = await _final_text(ask)
        about = await discord_api.slash("about", discord_api.user())
        about_text = await _final_text(about)
    assert text == about_text == errors.ClassifierUnavailable.default_message
    assert not any(c.multipart for c in ask.calls), "no chart"


async def test_an_unexpected_exception_is_logged_once_and_answered_generically(
        discord_api: FakeDiscord, settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    clf = StubClassifier(error=RuntimeError("internal detail 0xDEAD"))
    async with discord_running(discord_api, settings, clf):
        ask = await discord_api.slash("identify", discord_api.user(), link=YT)
        assert await _final_text(ask) == replies.GENERIC_ERROR
        clf.error = None                                         # and the bot is still there
        await (await discord_api.slash("identify", discord_api.user(), link=YT)).done()
    tracebacks = [r for r in caplog.records if r.exc_info and isinstance(r.exc_info[1], RuntimeError)]
    assert len(tracebacks) == 1 and tracebacks[0].name == "bot.core"
    assert all("0xDEAD" not in str(c.body) for c in discord_api.calls)


async def test_a_pasted_link_to_an_unsupported_site_and_a_flood_of_pastes(discord_api: FakeDiscord,
                                                                          settings: Settings) -> None:
    s = settings.replace(discord_message_content=True, user_requests_per_minute=1)
    async with discord_running(discord_api, s, StubClassifier()):
        ada = discord_api.user()
        await discord_api.post(ada, "https://example.com/mix.mp3", dm=True)
        await discord_api.wait_for(lambda: discord_api.channel_messages(discord_api.dm(ada)["id"]))
        for _ in range(3):
            await discord_api.post(ada, YT, dm=True)
        await discord_api.settle(0.3)
    texts = [m["content"] for m in discord_api.channel_messages(discord_api.dm(ada)["id"])]
    assert texts[0] == errors.NotAllowed.default_message
    assert len(texts) == 2 and texts[1].startswith("Slow down a little: I listen once a minute for each person.")


# --- start-up -------------------------------------------------------------------------------------------------------

async def test_a_rejected_token_stops_start_up_without_printing_it(discord_api: FakeDiscord,
                                                                   settings: Settings) -> None:
    bad = settings.replace(discord_token="MTAx.not-the-right-token")
    with pytest.raises(errors.Unauthorized) as info:
        await run(bad, classifier=StubClassifier(), stop=asyncio.Event())
    assert "not-the-right-token" not in str(info.value) and "DISCORD_TOKEN" in str(info.value)
    assert info.value.__suppress_context__
    assert discord_api.calls[0].path == "/users/@me" and not discord_api.identifies


async def test_the_message_content_intent_refused_by_discord(settings: Settings,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import yarl
    from discord.gateway import DiscordWebSocket
    from discord.http import Route

    async with FakeDiscord(allow_message_content=False) as api:
        monkeypatch.setattr(Route, "BASE", api.base)
        monkeypatch.setattr(DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(api.gateway_url + "/"))
        with pytest.raises(errors.Unauthorized, match="Message Content Intent"):
            async with discord_running(api, settings.replace(discord_message_content=True), StubClassifier()):
                pass
    assert api.identifies[0]["intents"] & (1 << 15)
