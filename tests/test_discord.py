"""The Discord bot end to end: the real discord.py client against a loopback gateway and REST API.

`/identify` with a timestamped link, `/identify` with an audio attachment and the context menu on a voice
message each go through discord.py, the Classifier (TensorFlow on five procedural artists) and back; the
tests assert on what the stand-in received: the deferral (callback type 5), the progress edits of the
deferred response, the final embed and the chart uploaded with it (multipart). Interactions are built from
the command schema the bot synced. The rest uses a stand-in classifier.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import re
from pathlib import Path
from typing import Any, Iterator

import pytest

from bot import discord_app, discord_reply, replies
from bot.__main__ import run
from bot.charts import MAX_PNG_BYTES
from bot.core import CHART_NAME
from bot.history import link_at
from classifier.logs import quiet_secrets
from classifier.model.verdict import Verdict
from classifier.serve.engine import Engine
from classifier.settings import Settings
from classifier.store.history import History
from classifier.training import demo
from tests.fakes.classifier import (  # noqa: F401 (fixtures)
    StubClassifier,
    canned_verdict,
    local_fixture,
    media_fixture,
)
from tests.fakes.discord_api import (  # noqa: F401 (fixture)
    Ask,
    FakeDiscord,
    Refused,
    discord_api_fixture,
    discord_running,
)
from tests.fakes.media_host import MediaHost

FIVE = tuple(demo.STYLES)
PNG = b"\x89PNG\r\n\x1a\n"
YT = "https://youtu.be/dQw4w9WgXcQ"




# --- what an answer looks like ------------------------------------------------------------------------------

def _fields(embed: dict[str, Any]) -> dict[str, str]:
    return {f["name"]: f["value"] for f in embed.get("fields", [])}


def _progress(ask: Ask) -> list[str]:
    """The texts the deferred response showed while the job ran, in order."""
    return [c.content for c in ask.edits[:-1] if c.content]


def _assert_analysing(texts: list[str]) -> None:
    counts = [re.fullmatch(r"🔎 Analysing… (\d+)/(\d+) slices", t) for t in texts]
    assert texts and all(counts), texts
    done = [int(m[1]) for m in counts if m]
    assert done == sorted(done) and counts[-1] and counts[-1][1] == counts[-1][2], texts


def _assert_answer(ask: Ask, top: str) -> dict[str, Any]:
    """Deferred (type 5), then one multipart edit: an embed with five artists, confidence, genre, the chart."""
    assert ask.callback_type == 5 and ask.callback is not None and not ask.callback.body.get("data")
    final = ask.edits[-1]
    assert final.multipart and list(final.files) == ["files[0]"], "the chart goes up with the embed"
    name, png = final.files["files[0]"]
    assert name == CHART_NAME and png[:8] == PNG and 1000 < len(png) < MAX_PNG_BYTES
    assert final.body["content"] is None, "the progress text is cleared"
    (embed,) = final.embeds
    rows = re.findall(r"^(\d)\. [█░]{8} +(\d+)%  (.+)$", embed["description"], flags=re.M)
    assert [int(r[0]) for r in rows] == [1, 2, 3, 4, 5], embed["description"]
    assert sorted(r[2] for r in rows) == sorted(FIVE) and rows[0][2] == top
    assert embed["title"] == f"🎧 I think this is {top}."
    fields = _fields(embed)
    assert re.fullmatch(r"\d+% · \d+ of \d+ slices voted " + top, fields["Confidence"]), fields
    assert re.fullmatch(r"\S+ \d+%( · \S+ \d+%)*", fields["Genre"]), fields
    assert embed["image"] == {"url": "attachment://chart.png"}
    message = ask.original
    assert message is not None and message["embeds"] == [embed] and message["content"] == ""
    assert [a["filename"] for a in message["attachments"]] == ["chart.png"]
    assert message["attachments"][0]["description"] == "Top artists, and the vote of each slice along the clip."
    return embed


# --- the three ways in, with the real classifier ------------------------------------------------------------

async def test_identify_a_timestamped_link(discord_api: FakeDiscord, trained5: Settings, media: MediaHost) -> None:
    settings = trained5.replace(fetch_extra_hosts=(media.hostport,), fetch_window_seconds=15.0)
    clf = Engine(settings)
    link = media.url("iron-riff.mp3")
    try:
        async with discord_running(discord_api, settings, clf):
            ask = await discord_api.slash("identify", discord_api.user(), link=link, at="0:10")
            await ask.done(timeout=120)
    finally:
        await clf.aclose()
    embed = _assert_answer(ask, "Iron Riff")
    progress = _progress(ask)
    assert progress[0] == replies.progress_text("fetching")
    _assert_analysing(progress[1:])
    assert embed["url"] == f"{link}#t=0:10", "the title links to the source at its time"
    assert _fields(embed)["Source"] == f"[{media.hostport}/iron\\-riff.mp3]({link}#t=0:10) · 0:10–0:25"
    assert any(r.range for r in media.requests), "the window was fetched with ranges, not the whole file"


async def test_identify_an_audio_attachment(discord_api: FakeDiscord, trained5: Settings, audio_dir: Path,
                                            local: Engine) -> None:
    async with discord_running(discord_api, trained5, local):
        mp3 = discord_api.attachment((audio_dir / "loop.mp3").read_bytes(), "loop.mp3", "audio/mpeg")
        ask = await discord_api.slash("identify", discord_api.user(), file=mp3)
        await ask.done(timeout=120)
    embed = _assert_answer(ask, "Deep Pulse")
    progress = _progress(ask)
    assert progress[0] == replies.progress_text("downloading")
    _assert_analysing(progress[1:])
    assert discord_api.cdn_requests[0] == mp3["id"], "discord.py downloaded the attachment from the CDN"
    assert _fields(embed)["Source"] == "loop.mp3 · 0:00–0:20" and "url" not in embed


async def test_the_context_menu_on_a_voice_message(discord_api: FakeDiscord, trained5: Settings, audio_dir: Path,
                                                   local: Engine) -> None:
    async with discord_running(discord_api, trained5, local):
        ada, bob = discord_api.user(1, "ada"), discord_api.user(2, "bob")
        voice = discord_api.attachment((audio_dir / "voice.ogg").read_bytes(), "voice-message.ogg", "audio/ogg",
                                       voice=True, duration=20.0)
        message = await discord_api.post(ada, attachments=[voice], dispatch=False)
        ask = await discord_api.context_menu(replies.CONTEXT_MENU, message, bob)
        await ask.done(timeout=120)
    embed = _assert_answer(ask, "Deep Pulse")
    assert _progress(ask)[0] == replies.progress_text("downloading")
    assert _fields(embed)["Source"] == "voice message · 0:00–0:20"


async def test_genre_of_a_file_in_a_dm(discord_api: FakeDiscord, settings: Settings) -> None:
    clf = StubClassifier()
    async with discord_running(discord_api, settings, clf):
        ogg = discord_api.attachment(b"OggS" + bytes(3000), "set.ogg", "audio/ogg")
        ask = await discord_api.slash("genre", discord_api.user(), dm=True, file=ogg, at="1:00")
        await ask.done()
    (embed,) = ask.edits[-1].embeds
    assert embed["title"] == "🎛 Genre: house" and embed["description"].startswith("1. ")
    assert _fields(embed)["Sounds"] == "beat · electronic"
    assert ask.edits[-1].files["files[0]"][0] == "chart.png" and ask.payload["context"] == 1
    assert clf.queries[0].at == 60.0 and clf.queries[0].label == "set.ogg"
    assert clf.queries[0].duration_s == settings.max_clip_seconds


async def test_an_unsure_vote_says_i_dont_know_with_the_weak_candidates(discord_api: FakeDiscord,
                                                                        settings: Settings) -> None:
    class Unsure(StubClassifier):
        async def identify(self, query: Any, progress: Any = None) -> Verdict:
            await self._work(query, progress)
            return canned_verdict(query.display, identified=False)

    async with discord_running(discord_api, settings, Unsure()):
        ask = await discord_api.slash("identify", discord_api.user(), link=f"{YT}?t=95")
        await ask.done()
    (embed,) = ask.edits[-1].embeds
    assert embed["title"] == "🤷 I don't know this one."
    assert embed["description"].startswith("It doesn't sound enough like any of the 5 artists I know. "
                                           "The nearest, all weak:\n1. ")
    assert len(re.findall(r"^\d\. ", embed["description"], flags=re.M)) == 5
    assert _fields(embed)["Confidence"] == "31%, too low to name anyone"
    assert embed["color"] == discord_reply.colour("unknown").value
    assert embed["url"] == "https://www.youtube.com/watch?v=dQw4w9WgXcQ&t=95s"


# --- commands, sync, intents, sharding ------------------------------------------------------------------------

async def test_the_synced_schema_and_about(discord_api: FakeDiscord, settings: Settings) -> None:
    async with discord_running(discord_api, settings, StubClassifier()):
        ask = await discord_api.slash("about", discord_api.user())
        await ask.done()
    puts = discord_api.of("PUT", r"^/applications/\d+/commands$")
    assert len(puts) == 1 and not discord_api.of("PUT", "/guilds/"), "global sync when no dev guild is set"
    commands = {c["name"]: c for c in puts[0].body}
    assert list(commands) == ["identify", "genre", "history", "about", replies.CONTEXT_MENU]
    for name in ("identify", "genre"):
        options = {o["name"]: (o["type"], o["required"]) for o in commands[name]["options"]}
        assert options == {"link": (3, False), "file": (11, False), "at": (3, False)}
    assert commands["history"]["options"][0] | {"description": ""} == {
        "type": 4, "name": "n", "description": "", "required": False, "min_value": 1, "max_value": 200}
    assert commands[replies.CONTEXT_MENU]["type"] == 3
    assert all(c["contexts"] == [0, 1] for c in commands.values()), "guilds and DMs with the bot"
    assert ask.callback_type == 5
    (embed,) = ask.edits[-1].embeds
    assert embed["description"].startswith("**Model head\\-test\\-5a**: 5 artists")
    assert all(name in embed["description"] for name in FIVE)


async def test_a_dev_guild_gets_the_commands_at_once(discord_api: FakeDiscord, settings: Settings) -> None:
    s = settings.replace(discord_dev_guild_id=discord_api.guild_id)
    async with discord_running(discord_api, s, StubClassifier()):
        ask = await discord_api.slash("identify", discord_api.user(), link=YT)
        await ask.done()
    assert [c.path for c in discord_api.calls if c.method == "PUT"] == [
        f"/applications/{discord_api.app_id}/guilds/{discord_api.guild_id}/commands"]
    assert ask.payload["data"]["guild_id"] == str(discord_api.guild_id)
    assert ask.edits[-1].embeds[0]["title"] == "🎧 I think this is Deep Pulse."


async def test_intents_sharding_and_start_up(discord_api: FakeDiscord, settings: Settings) -> None:
    async with discord_running(discord_api, settings, StubClassifier()) as bot:
        assert isinstance(bot, discord_app.SpyBot) and bot.shard_count == 1
    (identify,) = discord_api.identifies
    assert identify["shard"] == [0, 1], "AutoShardedBot asked GET /gateway/bot how many shards to run"
    assert identify["intents"] == 1, "guilds only: interactions need no intents, messages are opt-in"
    assert discord_api.gateway_queries[0]["v"] == "10" and discord_api.gateway_queries[0]["encoding"] == "json"
    assert [(c.method, c.path) for c in discord_api.calls][:3] == [
        ("GET", "/users/@me"), ("GET", "/oauth2/applications/@me"),
        ("PUT", f"/applications/{discord_api.app_id}/commands")]
    assert discord_api.of("GET", "^/gateway/bot$")


async def test_run_starts_discord_when_its_token_is_set(discord_api: FakeDiscord, settings: Settings) -> None:
    """bot/__main__.run: the one `async with` block `spy bot` runs, here with a stand-in classifier."""
    stop = asyncio.Event()
    task = asyncio.create_task(run(settings.replace(discord_token=discord_api.token), classifier=StubClassifier(),
                                   stop=stop))
    await asyncio.wait_for(discord_api.ready.wait(), 30)
    await discord_api.wait_for(lambda: discord_api.synced(), timeout=10)
    ask = await discord_api.slash("identify", discord_api.user(), link=YT)
    await ask.done()
    stop.set()
    await asyncio.wait_for(task, 10)
    assert ask.callback_type == 5 and ask.edits[-1].embeds


async def test_a_429_on_the_answer_is_waited_out(discord_api: FakeDiscord, settings: Settings) -> None:
    async with discord_running(discord_api, settings, StubClassifier()):
        discord_api.rate_limit_next("PATCH", r"/messages/@original$", retry_after=0.5)
        ask = await discord_api.slash("identify", discord_api.user(), link=YT)
        await ask.done()
    first, second = ask.edits
    assert first.body == second.body and first.files == second.files and second.at - first.at >= 0.5
    assert second.embeds[0]["title"] == "🎧 I think this is Deep Pulse."


async def test_a_chart_that_fails_leaves_the_embed_standing(discord_api: FakeDiscord, settings: Settings,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    def broken(result: object) -> bytes:
        raise RuntimeError("no fonts today")

    monkeypatch.setattr("bot.charts.render_chart", broken)
    async with discord_running(discord_api, settings, StubClassifier()):
        ask = await discord_api.slash("identify", discord_api.user(), link=YT)
        answer = await ask.done()
    final = ask.edits[-1]
    assert not final.multipart and final.body["attachments"] == [] and "image" not in final.embeds[0]
    assert answer["embeds"][0]["title"] == "🎧 I think this is Deep Pulse."
    assert any(r.getMessage() == "chart not drawn" for r in caplog.records)


# --- pasted links (the message-content intent) ------------------------------------------------------------------

async def test_pasted_links_with_the_message_content_setting(discord_api: FakeDiscord, settings: Settings) -> None:
    clf = StubClassifier()
    s = settings.replace(discord_message_content=True)
    async with discord_running(discord_api, s, clf):
        ada = discord_api.user(1, "ada")
        await discord_api.post(ada, f"great set {YT}?t=95")                   # a server message: not for us
        await discord_api.settle(0.2)
        assert not discord_api.of("POST", r"/channels/\d+/messages$")
        asked = await discord_api.post(ada, f"who is this {YT}?t=95", mention=True)
        await discord_api.wait_for(lambda: _answered_reply(discord_api, asked))
        dm = await discord_api.post(ada, "https://soundcloud.com/someone/a-track#t=2:30", dm=True)
        await discord_api.wait_for(lambda: _answered_reply(discord_api, dm))
        answer = discord_api.channel_messages(discord_api.channel_id)[0]
        again = await discord_api.post(ada, "and this one? https://youtu.be/dQw4w9WgXcQ?t=1", reply_to=answer)
        await discord_api.wait_for(lambda: _answered_reply(discord_api, again))      # a reply to the bot
    assert discord_api.identifies[0]["intents"] & (1 << 15), "the privileged message-content intent is asked for"
    posts = discord_api.of("POST", r"/channels/\d+/messages$")
    assert [p.body["content"] for p in posts] == [replies.LISTENING] * 3
    assert posts[0].body["message_reference"]["message_id"] == int(asked["id"])
    assert posts[0].body["allowed_mentions"] == {"parse": [], "replied_user": False}
    final = discord_api.of("PATCH", r"/channels/\d+/messages/\d+$")[-1]
    assert final.multipart and final.embeds[0]["title"] == "🎧 I think this is Deep Pulse."
    assert [(q.source.url, q.source.start_s) for q in clf.queries] == [
        ("https://www.youtube.com/watch?v=dQw4w9WgXcQ", 95.0), ("https://soundcloud.com/someone/a-track", 150.0),
        ("https://www.youtube.com/watch?v=dQw4w9WgXcQ", 1.0)]


def _answered_reply(api: FakeDiscord, asked: dict[str, Any]) -> bool:
    return any(m.get("message_reference", {}).get("message_id") == asked["id"] and m["embeds"]
               for m in api.messages.values())


# --- history: record, /history, corrections, /forget_me ------------------------------------------------------------

@pytest.fixture
def history(tmp_path: Path) -> Iterator[History]:
    h = History(tmp_path / "history.sqlite3")
    yield h
    h.close()


async def test_answers_are_recorded_and_can_be_corrected(discord_api: FakeDiscord, settings: Settings,
                                                         history: History) -> None:
    async with discord_running(discord_api, settings, StubClassifier(), history):
        ada, bob = discord_api.user(1, "ada"), discord_api.user(2, "bob")
        ask = await discord_api.slash("identify", ada, link=f"{YT}?t=95")
        answer = await ask.done()
        (row,) = answer["components"]
        (button,) = row["components"]
        assert button["label"] == replies.WRONG and button["custom_id"] == "spy:wrong:1"
        opened = await discord_api.click(answer, "spy:wrong:1", bob)
        await discord_api.wait_for(lambda: opened.modal)
        with pytest.raises(Refused, match="artist is required"):       # Discord's form will not send it empty
            await discord_api.submit(opened, bob, artist="")
        submitted = await discord_api.submit(opened, bob, artist="  Real   Artist ")
        thanks = await submitted.done()
        genre = await discord_api.slash("genre", ada, link=YT)
        genre_answer = await genre.done()
        forget = await discord_api.slash("forget_me", ada)
        forgotten = await forget.done()
    assert opened.callback_type == 9 and opened.modal["title"] == "Who is it?"
    assert submitted.callback_type == 4 and thanks["flags"] & 64, "the thanks is ephemeral"
    assert thanks["content"] == ("✏️ Thanks, noted: answer \\#1 is **Real Artist**. The operator reviews "
                                 "corrections before the model learns from them.")
    assert genre_answer["components"] == [], "genre answers carry no correction button"
    assert forgotten["content"] == "🧹 Done: I deleted your 2 requests from this chat's history."
    assert forgotten["flags"] & 64


async def test_a_correction_is_kept_with_the_record(discord_api: FakeDiscord, settings: Settings,
                                                   history: History) -> None:
    async with discord_running(discord_api, settings, StubClassifier(), history):
        ada = discord_api.user(1, "ada")
        answer = await (await discord_api.slash("identify", ada, link=f"{YT}?t=95")).done()
        opened = await discord_api.click(answer, "spy:wrong:1", ada)
        await discord_api.wait_for(lambda: opened.modal)
        await (await discord_api.submit(opened, ada, artist="Real Artist")).done()
    (record,) = await history.recent("discord", str(discord_api.channel_id))
    assert (record.user, record.kind, record.winner, record.correction, record.corrected_by) == (
        "1", "identify", "Deep Pulse", "Real Artist", "1")
    assert record.source.startswith("https://www.youtube.com/watch?v=dQw4w9WgXcQ")


async def test_a_correction_button_from_another_channel_is_refused(discord_api: FakeDiscord, settings: Settings,
                                                                  history: History) -> None:
    other = await history.record(platform="discord", chat="42", user="9", source="voice message",
                                 result=canned_verdict())
    async with discord_running(discord_api, settings, StubClassifier(), history):
        ada = discord_api.user(1, "ada")
        answer = await (await discord_api.slash("identify", ada, link=YT)).done()
        forged = dict(answer, components=[{"type": 1, "components": [
            {"type": 2, "style": 2, "label": replies.WRONG, "custom_id": f"spy:wrong:{other}"}]}])
        discord_api.messages[answer["id"]] = forged
        opened = await discord_api.click(forged, f"spy:wrong:{other}", ada)
        await discord_api.wait_for(lambda: opened.modal)
        refused = await (await discord_api.submit(opened, ada, artist="Someone")).done()
    assert refused["content"] == ("I can't find that answer in this chat's history any more (it was forgotten "
                                  "or is too old).") and refused["flags"] & 64
    record = await history.get(other)
    assert record is not None and record.correction is None


async def test_history_lists_the_channel_newest_first_and_pages(discord_api: FakeDiscord, settings: Settings,
                                                                history: History) -> None:
    chat = str(discord_api.channel_id)
    for i in range(12):
        await history.record(platform="discord", chat=chat, user="1",
                             source=link_at(f"https://youtu.be/dQw4w9WgX{i:02d}", 0.0, ()),
                             result=canned_verdict(identified=i != 3))
    await history.record(platform="discord", chat="999", user="1", source="elsewhere", result=canned_verdict())
    await history.correct(2, user="2", artist="Someone Else")
    async with discord_running(discord_api, settings, StubClassifier(), history):
        ada = discord_api.user(1, "ada")
        ask = await discord_api.slash("history", ada, n=12)
        page1 = copy.deepcopy(await ask.done())        # the stand-in edits its messages in place
        older = await discord_api.click(page1, "spy:history:12:10", ada)
        await discord_api.wait_for(lambda: older.callback_type)
        page2 = discord_api.messages[page1["id"]]
        with pytest.raises(Refused, match="is disabled"):          # as Discord's client: no older page
            await discord_api.click(page2, "spy:history:12:20", ada)
        few = await discord_api.slash("history", ada)
        short = await few.done()
    assert ask.callback_type == 5 and ask.callback.body["data"]["flags"] == 64, "an ephemeral deferral"
    head, *lines = page1["embeds"][0]["description"].splitlines()
    assert head == "**🕘 Answers 1–10 of 12 in this chat, newest first:**"
    assert len(lines) == 10 and lines[0].startswith("1. 🎧 **Deep Pulse** 62% · [youtube.com/watch?v=dQw4w9WgX11&t=0s]"
                                                    "(https://www.youtube.com/watch?v=dQw4w9WgX11&t=0s) at 0:00 · ")
    assert lines[8].startswith("9. 🤷 didn't know \\(nearest Deep Pulse 31%\\) · ")
    buttons = [(b["custom_id"], b["label"], b.get("disabled", False)) for b in page1["components"][0]["components"]]
    assert buttons == [("spy:history:12:0", "‹ Newer", True), ("spy:history:12:10", "Older ›", False)]
    assert older.callback_type == 7, "the page is replaced in place"
    head2, *lines2 = page2["embeds"][0]["description"].splitlines()
    assert head2 == "**🕘 Answers 11–12 of 12 in this chat, newest first:**"
    assert [line.split(" ", 1)[0] for line in lines2] == ["11.", "12."]
    assert "dQw4w9WgX01" in lines2[0] and "corrected: **Someone Else**" in lines2[0] and "dQw4w9WgX00" in lines2[1]
    assert [(b["custom_id"], b.get("disabled", False)) for b in page2["components"][0]["components"]] == [
        ("spy:history:12:0", False), ("spy:history:12:20", True)]
    assert short["components"] == [] and len(short["embeds"][0]["description"].splitlines()) == 11


async def test_history_without_a_store(discord_api: FakeDiscord, settings: Settings) -> None:
    async with discord_running(discord_api, settings, StubClassifier()):
        ask = await discord_api.slash("history", discord_api.user())
        reply = await ask.done()
        answer = await (await discord_api.slash("identify", discord_api.user(), link=YT)).done()
        with pytest.raises(Refused, match="no synced command 'forget_me'"):
            await discord_api.slash("forget_me", discord_api.user())
    assert ask.callback_type == 4 and reply["content"] == replies.HISTORY_OFF and reply["flags"] & 64
    assert answer["components"] == [], "no correction button without a history store"


# --- logs ---------------------------------------------------------------------------------------------------

async def test_the_token_never_reaches_the_logs(discord_api: FakeDiscord, settings: Settings,
                                                caplog: pytest.LogCaptureFixture) -> None:
    levels = {name: logging.getLogger(name).level for name in ("httpx", "httpcore")}
    caplog.set_level(logging.DEBUG)
    redact = quiet_secrets(settings.replace(discord_token=discord_api.token), handlers=[caplog.handler])
    try:
        async with discord_running(discord_api, settings, StubClassifier()):
            mp3 = discord_api.attachment(b"ID3" + bytes(4000), "a.mp3", "audio/mpeg")
            await (await discord_api.slash("identify", discord_api.user(), file=mp3)).done()
    finally:
        caplog.handler.removeFilter(redact)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    assert "READY" in caplog.text, "discord.py's debug lines were captured"
    assert discord_api.token not in caplog.text and discord_api.token.split(".")[-1] not in caplog.text
    jobs = [r.getMessage() for r in caplog.records if r.name == "bot.core" and "job dc-" in r.getMessage()]
    assert len(jobs) == 1 and "identify source=discord:audio_file seconds=30.0 slices=10" in jobs[0]

