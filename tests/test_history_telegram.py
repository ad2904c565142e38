"""History through the Telegram bot: `/history`, the "Wrong?" button, `/correct`, `/forget_me`, and a corrected
link enrolled with `spy enrol --from-corrections`. The real python-telegram-bot against the loopback Bot API
(extended here with inline buttons), a stub classifier, and the real fetcher and backbone for the enrolment."""

from __future__ import annotations

import contextlib
import itertools
import json
import re
from typing import Any, AsyncIterator, Iterator

import pytest

from bot import telegram_app
from classifier.model.verdict import Verdict
from classifier.serve.api import ProgressCallback, Query
from classifier.settings import Settings
from classifier.store.history import History, Store
from classifier.store.index import Index
from spy.cli import build_parser
from tests.fakes.classifier import StubClassifier, canned_verdict, media_fixture  # noqa: F401 (fixtures)
from tests.fakes.media_host import MediaHost
from tests.fakes.telegram_api import FakeBotAPI

ADA, BOB, CAROL = FakeBotAPI.user(1, "Ada"), FakeBotAPI.user(2, "Bob"), FakeBotAPI.user(3, "Carol")


class ButtonBotAPI(FakeBotAPI):
    """The stand-in Bot API, plus what history needs: inline keyboards kept on the messages they were sent
    with, button presses (callback queries) and answerCallbackQuery."""

    def __init__(self) -> None:
        super().__init__()
        self._query_ids = itertools.count(1)

    def buttons(self, chat_id: int, message_id: int) -> list[tuple[str, str]]:
        """(text, callback_data) of the inline buttons now under a message."""
        markup = self.messages[(chat_id, message_id)].get("reply_markup") or {}
        return [(b["text"], b["callback_data"]) for row in markup.get("inline_keyboard", ()) for b in row]

    async def press(self, chat: dict[str, Any], user: dict[str, Any], message_id: int, data: str) -> None:
        """`user` presses the button with `data` under a message (any data: clients can send what they like)."""
        query = {"id": str(next(self._query_ids)), "from": user, "chat_instance": str(chat["id"]), "data": data,
                 "message": self.messages[(chat["id"], message_id)]}
        self._updates.append({"update_id": next(self._update_ids), "callback_query": query})
        await self._notify()

    def _keep_markup(self, message: dict[str, Any], params: dict[str, str]) -> dict[str, Any]:
        markup = json.loads(params["reply_markup"]) if "reply_markup" in params else None
        if markup is None or "inline_keyboard" in markup:   # an edit without one removes the buttons
            message.pop("reply_markup", None)
            if markup:
                message["reply_markup"] = markup
        return message

    async def _m_sendMessage(self, params: dict[str, str], files: dict[str, bytes]) -> Any:
        return self._keep_markup(await super()._m_sendMessage(params, files), params)

    async def _m_editMessageText(self, params: dict[str, str], files: dict[str, bytes]) -> Any:
        return self._keep_markup(await super()._m_editMessageText(params, files), params)

    async def _m_answerCallbackQuery(self, params: dict[str, str], files: dict[str, bytes]) -> Any:
        return True


class AtTheLinkClassifier(StubClassifier):
    """The stub, answering from where the link asked (as the fetcher would) and noting what was asked."""

    async def identify(self, query: Query, progress: ProgressCallback | None = None) -> Verdict:
        await self._work(query, progress)
        start = (query.source.start_s or 0.0) if query.source is not None else 0.0
        return canned_verdict(query.display, start=start)


@contextlib.asynccontextmanager
async def history_bot(api: FakeBotAPI, settings: Settings, classifier: Any,
                      history: History) -> AsyncIterator[Any]:
    app = telegram_app.build(api.settings(settings), classifier, history=history)
    async with telegram_app.running(app, poll_timeout_s=5.0):
        yield app


@pytest.fixture
def history(settings: Settings) -> Iterator[History]:
    h = History(settings.database)
    yield h
    h.close()



def _answers(api: ButtonBotAPI, chat_id: int) -> list[int]:
    """The message ids of the answers in a chat (status messages whose last edit is an answer)."""
    edits = [c for c in api.of("editMessageText", chat_id) if (c.text or "").startswith(("🎧", "🤷", "🎛"))]
    return list(dict.fromkeys(int(c.params["message_id"]) for c in edits))


def _last_reply(api: ButtonBotAPI, chat_id: int) -> tuple[int, str]:
    """(message id, text) of the bot's newest message in the chat."""
    mine = [(mid, m) for (cid, mid), m in api.messages.items() if cid == chat_id and m["from"]["id"] == 4242]
    mid, message = max(mine)
    return mid, message.get("text", "")


async def _ask(api: ButtonBotAPI, chat: dict[str, Any], user: dict[str, Any], text: str) -> int:
    """Send a command and wait for the bot's new message; returns its id."""
    before = len(api.of("sendMessage", chat["id"]))
    await api.send_text(chat, user, text)
    await api.wait_for(lambda: len(api.of("sendMessage", chat["id"])) > before, timeout=10)
    await api.settle(0.1)
    return _last_reply(api, chat["id"])[0]


@pytest.mark.slow      # loads the backbone to embed the enrolled clip (shared with the rest of the session)
async def test_ask_twice_correct_forget_and_enrol_the_corrected_link(
        settings: Settings, media: MediaHost, capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's 'done when': two answers in /history, a correction on the right one, /forget_me removing only
    that member's records, and `spy enrol --from-corrections` enrolling the corrected link."""
    settings = settings.replace(fetch_extra_hosts=(media.hostport,))
    link = media.url("iron-riff.mp3")
    history = History(settings.database)
    try:
        async with ButtonBotAPI() as api, history_bot(api, settings, AtTheLinkClassifier(), history):
            group = api.group_chat()
            g = group["id"]
            await api.send_text(group, ADA, f"/identify {link} 0:05")
            await api.wait_for(lambda: len(api.of("sendPhoto", g)) == 1)
            voice = await api.send_voice(group, BOB, b"OggS" + bytes(3000))
            await api.send_text(group, BOB, "/identify", reply_to=voice)
            await api.wait_for(lambda: len(api.of("sendPhoto", g)) == 2)
            ada_answer, bob_answer = _answers(api, g)
            assert api.buttons(g, ada_answer) == [("Wrong? Tell me the artist", "wrong:1")]
            assert api.buttons(g, bob_answer) == [("Wrong? Tell me the artist", "wrong:2")]

            listing = api.messages[(g, await _ask(api, group, CAROL, "/history"))]["text"]
            lines = listing.splitlines()
            assert lines[0] == "<b>🕘 The last 2 answers in this chat, newest first:</b>"
            assert re.fullmatch(r"1\. 🎧 <b>Deep Pulse</b> 62% · voice note · .* UTC", lines[1]), lines[1]
            assert re.fullmatch(rf'2\. 🎧 <b>Deep Pulse</b> 62% · <a href="{re.escape(link)}#t=0:05">'
                                rf'{re.escape(media.hostport)}/iron-riff.mp3</a> at 0:05 · .* UTC', lines[2]), lines[2]

            # Carol: "Wrong?" under Ada's answer, then the name as a reply to the bot's question
            await api.press(group, CAROL, ada_answer, "wrong:1")
            await api.wait_for(lambda: api.of("answerCallbackQuery"))
            await api.wait_for(lambda: "which artist is it?" in _last_reply(api, g)[1], timeout=10)
            question_id, question = _last_reply(api, g)
            assert question.endswith("(answer #1)") and 'href="tg://user?id=3"' in question
            assert json.loads(api.of("sendMessage", g)[-1].params["reply_markup"])["force_reply"] is True
            await api.send_text(group, CAROL, "Iron Riff", reply_to=api.messages[(g, question_id)])
            await api.wait_for(lambda: "Thanks, noted" in _last_reply(api, g)[1], timeout=10)
            assert _last_reply(api, g)[1].startswith("✏️ Thanks, noted: answer #1 is <b>Iron Riff</b>.")
            # Bob: /correct as a reply to his own answer
            await api.send_text(group, BOB, "/correct Slow Tide", reply_to=api.messages[(g, bob_answer)])
            await api.wait_for(lambda: "answer #2 is <b>Slow Tide</b>" in _last_reply(api, g)[1], timeout=10)
            ada_record, bob_record = await history.get(1), await history.get(2)
            assert ada_record is not None and (ada_record.user, ada_record.correction) == ("1", "Iron Riff")
            assert ada_record.corrected_by == "3"
            assert bob_record is not None and (bob_record.user, bob_record.correction) == ("2", "Slow Tide")

            # Bob forgets himself: only his record goes
            reply = api.messages[(g, await _ask(api, group, BOB, "/forget_me"))]["text"]
            assert reply == "🧹 Done: I deleted your 1 request from this chat's history."
            assert [r.id for r in await history.recent("telegram", str(g))] == [1]
            listing = api.messages[(g, await _ask(api, group, ADA, "/history"))]["text"]
            assert "The last answer in this chat" in listing and "voice note" not in listing
            assert "✏️ corrected: <b>Iron Riff</b>" in listing
    finally:
        history.close()

    # The operator enrols the corrected link: fetched again at 0:05 from the media host, embedded, indexed.
    args = build_parser().parse_args(["enrol", "--from-corrections"])
    assert args.func(settings, args) == 0
    out = capsys.readouterr().out
    assert "Enrolled 1 track(s)" in out and "1 correction(s) marked as enrolled." in out
    with Index(settings.database) as index:
        [track] = index.tracks()
    assert (track.artist, track.title, track.source) == ("Iron Riff", "history #1", f"{link}#t=0:05")
    assert 25.0 <= track.duration_s <= 31.0, "the 30-s window the chat heard, not the whole file"
    assert any(r.range for r in media.requests), "fetched as a window, with ranges"
    with Store(settings.database) as store:
        assert store.get(1).enrolled_track == track.id  # type: ignore[union-attr]
    assert args.func(settings, args) == 0, "a second run finds nothing waiting"
    assert "No corrected links waiting" in capsys.readouterr().err


async def test_history_pages_with_buttons(settings: Settings, history: History) -> None:
    async with ButtonBotAPI() as api, history_bot(api, settings, StubClassifier(), history):
        group = api.group_chat()
        g = str(group["id"])
        for i in range(25):
            history.store.add(platform="telegram", chat=g, user="1", source=f"clip-{i:02d}.mp3",
                              result=canned_verdict(f"clip-{i:02d}.mp3"), now=1_700_000_000.0 + i)
        listing_id = await _ask(api, group, ADA, "/history 25")
        page = api.messages[(group["id"], listing_id)]
        assert page["text"].startswith("<b>🕘 Answers 1–10 of 25 in this chat, newest first:</b>\n1. ")
        assert "clip-24.mp3" in page["text"] and "clip-15.mp3" in page["text"] and "clip-14" not in page["text"]
        assert api.buttons(group["id"], listing_id) == [("Older ›", "history:25:10")]

        for data, first, last, buttons in [
            ("history:25:10", "11–20", "clip-05.mp3",
             [("‹ Newer", "history:25:0"), ("Older ›", "history:25:20")]),
            # the callback data of lists sent before both bots named the action "history" still pages
            ("hist:25:20", "21–25", "clip-00.mp3", [("‹ Newer", "history:25:10")]),
        ]:
            await api.press(group, BOB, listing_id, data)
            await api.wait_for(lambda: f"Answers {first} of 25" in api.messages[(group["id"], listing_id)]["text"],
                               timeout=10)
            assert last in api.messages[(group["id"], listing_id)]["text"]
            assert api.buttons(group["id"], listing_id) == buttons
        assert len(api.of("answerCallbackQuery")) == 2

        short = api.messages[(group["id"], await _ask(api, group, ADA, "/history 3"))]
        assert short["text"].startswith("<b>🕘 The last 3 answers") and "reply_markup" not in short
    commands = [c["command"] for c in api.of("setMyCommands")[0].json("commands")]
    assert commands == ["identify", "genre", "about", "help", "history", "correct", "forget_me"]


async def test_genre_answers_get_no_wrong_button_and_help_mentions_history(settings: Settings,
                                                                           history: History) -> None:
    async with ButtonBotAPI() as api, history_bot(api, settings, StubClassifier(), history):
        chat = api.private_chat(ADA)
        voice = await api.send_voice(chat, ADA, b"OggS" + bytes(3000))
        await api.wait_for(lambda: api.of("sendPhoto", 1))
        await api.send_text(chat, ADA, "/genre", reply_to=voice)
        await api.wait_for(lambda: len(api.of("sendPhoto", 1)) == 2)
        identify_answer, genre_answer = _answers(api, 1)
        assert api.buttons(1, identify_answer) and not api.buttons(1, genre_answer)
        assert [r.kind for r in await history.recent("telegram", "1")] == ["genre", "identify"]
        help_text = api.messages[(1, await _ask(api, chat, ADA, "/help"))]["text"]
        assert "<b>/history [n]</b>" in help_text and "<b>/forget_me</b>" in help_text


# --- refused input --------------------------------------------------------------------------------------------

async def test_history_commands_refuse_what_they_cannot_do(settings: Settings, history: History) -> None:
    async with ButtonBotAPI() as api, history_bot(api, settings, StubClassifier(), history):
        group, other = api.group_chat(), api.group_chat(-100600, "Elsewhere")
        g = group["id"]
        elsewhere = history.store.add(platform="telegram", chat=str(other["id"]), user="1", source="voice note",
                                      result=canned_verdict())
        help_id = await _ask(api, group, ADA, "/help")
        cases = [
            ("/history lots", "Send /history for the last 10 answers, or /history 25 for more (up to 200)."),
            ("/history 0", "Send /history for the last 10 answers"),
            ("/correct Iron Riff", "Reply /correct <artist> to my answer, like: /correct Deep Pulse"),
            ("/history", "Nothing identified in this chat yet."),
        ]
        for text, expected in cases:
            reply = api.messages[(g, await _ask(api, group, ADA, text))]["text"]
            assert reply.startswith(expected), (text, reply)

        await api.send_text(group, ADA, "/correct Iron Riff", reply_to=api.messages[(g, help_id)])
        await api.wait_for(lambda: "I don't have that message" in _last_reply(api, g)[1], timeout=10)
        # a forged button for another chat's record: an alert, and the record untouched
        await api.press(group, ADA, help_id, f"wrong:{elsewhere}")
        await api.wait_for(lambda: api.of("answerCallbackQuery"), timeout=10)
        alert = api.of("answerCallbackQuery")[0]
        assert alert.params["show_alert"] == "true" and "can't find that answer" in alert.params["text"]
        # a reply to a question about another chat's record is refused the same way
        question = {**api.messages[(g, help_id)], "text": f"Ada, which artist is it? (answer #{elsewhere})"}
        await api.send_text(group, ADA, "Iron Riff", reply_to=question)
        await api.wait_for(lambda: "can't find that answer" in _last_reply(api, g)[1], timeout=10)
        reply = api.messages[(g, await _ask(api, group, CAROL, "/forget_me"))]["text"]
        assert reply == "🧹 I had nothing of yours in this chat's history."
    assert (await history.get(elsewhere)).correction is None  # type: ignore[union-attr]
