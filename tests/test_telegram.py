"""The Telegram bot end to end: the real python-telegram-bot against a loopback Bot API, the real classifier.

A voice note and a timestamped link each go through PTB, the Classifier (TensorFlow on five procedural
artists) and back; the tests assert on what the stand-in server received: the "listening..." message,
its edits in order, the final answer and the chart.
"""

from __future__ import annotations

import asyncio
import html
import logging
import re
from pathlib import Path

import pytest

from bot import links, replies
from bot.__main__ import run
from bot.charts import MAX_PNG_BYTES
from classifier import errors
from classifier.logs import quiet_secrets
from classifier.serve.engine import Engine
from classifier.settings import Settings
from classifier.training import demo
from tests.fakes.classifier import StubClassifier, local_fixture, media_fixture  # noqa: F401 (fixtures)
from tests.fakes.media_host import MediaHost
from tests.fakes.telegram_api import TOKEN, FakeBotAPI, bot_running

FIVE = tuple(demo.STYLES)




def _answer_parts(api: FakeBotAPI, chat_id: int) -> tuple[str, list[str], str, bytes, int]:
    """(first reply, edits in order, final text, chart bytes, status message id)."""
    convo = api.conversation(chat_id)
    assert [k for k, _ in convo][0] == "send" and [k for k, _ in convo][-1] == "photo", convo
    edits = api.of("editMessageText", chat_id)
    ids = {c.params["message_id"] for c in edits}
    assert len(ids) == 1, "every edit goes to the one status message"
    photo = api.of("sendPhoto", chat_id)[-1]
    assert photo.json("reply_parameters")["message_id"] == int(ids.pop()), "the chart answers the answer"
    return convo[0][1], [c.text or "" for c in edits], edits[-1].text or "", photo.files["photo"], \
        int(edits[0].params["message_id"])


def _assert_png(data: bytes) -> None:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and 1000 < len(data) < MAX_PNG_BYTES


def _assert_analysing(edits: list[str]) -> None:
    """Progress edits between the first stage and the answer: slices counting up to all of them."""
    counts = [re.fullmatch(r"🔎 Analysing… (\d+)/(\d+) slices", e) for e in edits]
    assert edits and all(counts), edits
    done = [int(m[1]) for m in counts if m]
    assert done == sorted(done) and counts[-1] and counts[-1][1] == counts[-1][2], edits


def _assert_top5(final: str, top: str) -> None:
    rows = re.findall(r"^(\d)\. [█░]{8} +(\d+)%  (.+)$", final, flags=re.M)
    assert [int(r[0]) for r in rows] == [1, 2, 3, 4, 5], final
    assert sorted(html.unescape(r[2]) for r in rows) == sorted(FIVE)
    assert f"I think this is <b>{top}</b>." in final and rows[0][2] == top
    assert re.search(r"^Confidence: \d+% · \d+ of \d+ slices voted " + top + "$", final, flags=re.M), final
    assert re.search(r"^Genre: .+ \d+%", final, flags=re.M), final


async def test_a_voice_note_gets_progress_edits_five_artists_a_genre_and_a_chart(
        trained5: Settings, audio_dir: Path, local: Engine) -> None:
    async with FakeBotAPI() as api, bot_running(api, trained5, local):
        user = api.user()
        chat = api.private_chat(user)
        await api.send_voice(chat, user, (audio_dir / "voice.ogg").read_bytes(), duration=20)  # 'Deep Pulse'
        await api.wait_for(lambda: api.of("sendPhoto", chat["id"]), timeout=120)
    first, edits, final, png, status_id = _answer_parts(api, chat["id"])
    assert first == replies.LISTENING
    assert edits[0] == replies.progress_text("downloading")
    _assert_analysing(edits[1:-1])
    _assert_top5(final, "Deep Pulse")
    assert "Source: voice note · 0:00–0:20" in final
    assert api.current_text(chat["id"], status_id) == final
    assert api.of("getFile") and api.downloads == ["voice/file_0.oga"]
    assert api.of("sendChatAction", chat["id"])[-1].params["action"] == "upload_photo"
    _assert_png(png)


@pytest.mark.parametrize("form", ["arguments", "reply"])
async def test_a_timestamped_link_is_fetched_from_that_moment(trained5: Settings, media: MediaHost, form: str) -> None:
    settings = trained5.replace(fetch_extra_hosts=(media.hostport,), fetch_window_seconds=15.0)
    local = Engine(settings)
    link = media.url("iron-riff.mp3")
    try:
        async with FakeBotAPI() as api, bot_running(api, settings, local):
            user = api.user()
            if form == "arguments":
                chat = api.private_chat(user)
                await api.send_text(chat, user, f"/identify {link} at 0:10")
            else:          # in a group: the link in someone's message, the time in a command that replies to it
                chat = api.group_chat()
                posted = await api.send_text(chat, api.user(), f"listen to this {link}")
                await api.settle()
                await api.send_text(chat, user, "/identify 0:10", reply_to=posted)
            await api.wait_for(lambda: api.of("sendPhoto", chat["id"]), timeout=120)
    finally:
        await local.aclose()
    first, edits, final, png, _ = _answer_parts(api, chat["id"])
    assert first == replies.LISTENING
    assert edits[0] == replies.progress_text("fetching")
    _assert_analysing(edits[1:-1])
    _assert_top5(final, "Iron Riff")
    assert f'Source: <a href="{link}#t=0:10">{media.hostport}/iron-riff.mp3</a> · 0:10–0:25' in final
    assert any(r.range for r in media.requests), "the window was fetched with ranges, not the whole file"
    _assert_png(png)


async def test_genre_as_a_reply_to_a_voice_note_in_a_group(trained5: Settings, audio_dir: Path,
                                                           local: Engine) -> None:
    async with FakeBotAPI() as api, bot_running(api, trained5, local):
        user = api.user()
        group = api.group_chat()
        voice = await api.send_voice(group, user, (audio_dir / "voice.ogg").read_bytes())
        await api.settle()
        assert api.conversation(group["id"]) == [], "a group's own voice notes are not for the bot"
        await api.send_text(group, user, "/genre", reply_to=voice)
        await api.wait_for(lambda: api.of("sendPhoto", group["id"]), timeout=120)
    first, edits, final, png, _ = _answer_parts(api, group["id"])
    assert first == replies.LISTENING
    assert final.startswith("🎛 Genre: <b>")
    assert re.search(r"^1\. [█░]{8} +\d+%  \S", final, flags=re.M)
    assert "Source: voice note · 0:00–0:20" in final
    assert api.of("sendPhoto")[-1].params["caption"].startswith("Top genres")
    _assert_png(png)


async def test_start_help_about_and_the_command_menu(trained5: Settings, local: Engine) -> None:
    async with FakeBotAPI() as api, bot_running(api, trained5, local):
        user = api.user()
        chat = api.private_chat(user)
        for command in ("/start", "/help", "/about"):
            await api.send_text(chat, user, command)
        await api.wait_for(lambda: len(api.replies(chat["id"])) == 3, timeout=30)
    commands = [c["command"] for c in api.of("setMyCommands")[0].json("commands")]
    assert commands == ["identify", "genre", "about", "help"]
    start, help_, about = sorted(api.replies(chat["id"]), key=lambda t: ("Hi!" not in t, "Model" in t))
    assert "Hi! I'm Deep House Spy." in start
    assert "/identify https://youtu.be/dQw4w9WgXcQ 1:02:03" in help_ and "&lt;link&gt;" in help_
    assert "reply to one of my messages" in help_
    for name in FIVE:
        assert name in about
    assert all(c.params.get("parse_mode") == "HTML" for c in api.of("sendMessage"))


async def test_in_groups_only_mentions_replies_and_commands_are_answered(settings: Settings) -> None:
    clf = StubClassifier()
    link = "https://www.youtube.com/watch?v=dQw4w9WgXcQ&t=95"
    async with FakeBotAPI() as api, bot_running(api, settings, clf):
        user = api.user()
        group = api.group_chat()
        await api.send_text(group, user, f"great set {link}")
        await api.send_text(group, user, "anyone here?")
        await api.settle()
        assert api.conversation(group["id"]) == []
        await api.send_text(group, user, f"what is this {link}", mention=True)
        await api.wait_for(lambda: api.of("sendPhoto", group["id"]), timeout=30)
    assert [q.source.url for q in clf.queries] == ["https://www.youtube.com/watch?v=dQw4w9WgXcQ"]
    assert clf.queries[0].source.start_s == 95.0


async def test_a_slow_job_does_not_hold_up_other_chats(settings: Settings) -> None:
    gate = asyncio.Event()
    clf = StubClassifier(gate=gate)
    async with FakeBotAPI() as api, bot_running(api, settings, clf):
        ada, bob = api.user(1, "Ada"), api.user(2, "Bob")
        await api.send_text(api.private_chat(ada), ada, "https://youtu.be/dQw4w9WgXcQ")
        await api.wait_for(lambda: clf.queries)
        await api.send_text(api.private_chat(bob), bob, "/help")
        await api.wait_for(lambda: api.replies(2), timeout=10)
        assert not api.of("sendPhoto"), "the first job is still listening"
        gate.set()
        await api.wait_for(lambda: api.of("sendPhoto", 1), timeout=10)


async def test_a_429_is_waited_out_by_the_rate_limiter(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PTB_TIMEDELTA", "true")   # as `spy bot` sets it: PTB 22 warns inside RetryAfter otherwise
    async with FakeBotAPI() as api, bot_running(api, settings, StubClassifier()):
        user = api.user()
        chat = api.private_chat(user)
        api.fail_next("sendMessage", retry_after=1)
        await api.send_text(chat, user, "/help")
        await api.wait_for(lambda: len(api.of("sendMessage")) == 2, timeout=10)
    first, second = api.of("sendMessage")
    assert first.text == second.text and second.at - first.at >= 1.0


async def test_the_token_never_reaches_the_logs(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    levels = {name: logging.getLogger(name).level for name in ("httpx", "httpcore")}
    caplog.set_level(logging.DEBUG)
    redact = quiet_secrets(settings.replace(telegram_token=TOKEN), handlers=[caplog.handler])
    try:
        async with FakeBotAPI() as api, bot_running(api, settings, StubClassifier()):
            user = api.user()
            chat = api.private_chat(user)
            await api.send_voice(chat, user, b"OggS" + bytes(2000))
            await api.wait_for(lambda: api.of("sendPhoto"), timeout=10)
    finally:
        caplog.handler.removeFilter(redact)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    text = caplog.text
    assert "getUpdates" in text or "Calling Bot API endpoint" in text, "PTB's debug lines were captured"
    assert TOKEN not in text and TOKEN.split(":")[1] not in text
    assert "bot<token>" in text, "PTB logged its URL with the token, and the filter replaced it"
    assert not [r for r in caplog.records if r.name.startswith("httpx") and r.levelno < logging.WARNING]
    job_lines = [r.getMessage() for r in caplog.records if r.name == "bot.core" and "job tg-" in r.getMessage()]
    assert len(job_lines) == 1 and "source=telegram:voice_note" in job_lines[0]


# --- bot.links: the one place where chat text becomes a link and a time (shared with Discord) -----------------

YT = "https://youtu.be/dQw4w9WgXcQ"


@pytest.mark.parametrize("text, reply_text, start", [
    (f"/identify {YT} 1:02:03", None, 3723.0),
    (f"/identify {YT} 1h 2m 3s", None, 3723.0),          # every word of the time, not just the last
    (f"/identify@SpyBot 1:02:03 {YT}", None, 3723.0),     # the time before the link
    (f"who is this at 62:03? {YT}", None, 3723.0),
    (f"{YT} at 1:02:03 please", None, 3723.0),
    (f"{YT} 90sec", None, 90.0),
    (f"{YT}?t=5", None, 5.0),                              # the link's own time
    (f"{YT}?t=5 at 1:00", None, 60.0),                     # a typed time beats the link's own
    ("/identify 1:02:03", f"listen to this {YT}", 3723.0),  # a command sent as a reply to a message with a link
    ("/identify", f"{YT} at 0:30", 30.0),
    (f"/identify {YT}", None, None),
])
def test_chat_text_becomes_a_link_and_a_time(text: str, reply_text: str | None, start: float | None) -> None:
    source = links.source_in(text, reply_text=reply_text)
    assert (source.url, source.start_s) == ("https://www.youtube.com/watch?v=dQw4w9WgXcQ", start)


def test_links_give_sources_with_their_times() -> None:
    source = links.source_in("look", at="1:00", extra_urls=["https://youtu.be/dQw4w9WgXcQ?t=5"])
    assert (source.url, source.start_s) == ("https://www.youtube.com/watch?v=dQw4w9WgXcQ", 60.0)
    assert links.looks_like_link("see www.youtube.com/watch?v=x") and links.looks_like_link("127.0.0.1:8080/a")
    assert not links.looks_like_link("nice tune, who is it?")


@pytest.mark.parametrize("text, code", [
    (f"{YT} at 1:02 or maybe 3:04", "two_times"),
    (f"{YT} at 1:99", "bad_time"),
    ("/identify 1:02:03", "bad_source"),                   # a time and no link anywhere
    ("x" * 9000 + f" {YT}", "text_too_long"),
])
def test_chat_text_refusals_are_named(text: str, code: str) -> None:
    with pytest.raises(errors.BadSource) as info:
        links.source_in(text)
    assert info.value.code == code and info.value.user_message


async def test_a_chart_that_fails_leaves_the_answer_standing(settings: Settings, monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    def broken(result: object) -> bytes:
        raise RuntimeError("no fonts today")

    monkeypatch.setattr("bot.charts.render_chart", broken)
    async with FakeBotAPI() as api, bot_running(api, settings, StubClassifier()):
        user = api.user()
        chat = api.private_chat(user)
        await api.send_text(chat, user, "https://youtu.be/dQw4w9WgXcQ")
        await api.wait_for(lambda: any(r.getMessage() == "chart not drawn" for r in caplog.records))
        await api.settle()
    assert api.of("editMessageText")[-1].text.startswith("🎧 I think this is <b>Deep Pulse</b>.")
    assert not api.of("sendPhoto") and api.replies(chat["id"]) == [replies.LISTENING]


async def test_long_voice_notes_are_cut_to_the_clip_limit_and_say_so(settings: Settings) -> None:
    clf = StubClassifier()
    async with FakeBotAPI() as api, bot_running(api, settings.replace(max_clip_seconds=120.0), clf):
        user = api.user()
        chat = api.private_chat(user)
        await api.send_voice(chat, user, b"OggS" + bytes(3000), duration=600)
        await api.wait_for(lambda: api.of("sendPhoto"))
    assert clf.queries[0].duration_s == 120.0 and clf.queries[0].label == "voice note"
    assert api.of("editMessageText")[-1].text.endswith("<i>I listened to the first 2 min.</i>")


async def test_run_serves_telegram_until_stopped(settings: Settings) -> None:
    """bot/__main__.run: the one `async with` block `spy bot` runs, here with a stand-in classifier."""
    async with FakeBotAPI() as api:
        stop = asyncio.Event()
        task = asyncio.create_task(run(api.settings(settings), classifier=StubClassifier(), stop=stop))
        user = api.user()
        chat = api.private_chat(user)
        await api.send_text(chat, user, "/about")
        await api.wait_for(lambda: api.replies(chat["id"]), timeout=10)
        stop.set()
        await asyncio.wait_for(task, 10)
    assert api.replies(chat["id"])[0].startswith("<b>Model head-test-5a</b>: 5 artists")
    assert [c.method for c in api.calls][:3] == ["getMe", "setMyCommands", "deleteWebhook"]
