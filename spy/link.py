"""`spy link TEXT...`: what the bot understands from each message text, without fetching anything.

Each TEXT is one chat message as a user would type it. For each, the platform, the canonical URL and the
start time, or the refusal's code and sentence, exactly as the bots get them from `links.understand`.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Iterator

from classifier import errors
from classifier.settings import Settings

__all__ = ["register", "read"]


def read(text: str, settings: Settings, *, at: str | None = None, reply: str | None = None) -> dict[str, Any]:
    """One message's reading as the stable JSON shape: text, ok, platform, url, start_s, code, message."""
    from classifier.sources.links import understand

    try:
        source = understand(text, at=at, reply_text=reply, extra_hosts=settings.fetch_extra_hosts,
                            max_chars=settings.max_message_chars)
    except errors.SpyError as exc:
        return {"text": text, "ok": False, "platform": None, "url": None, "start_s": None,
                "code": exc.code, "message": exc.user_message}
    return {"text": text, "ok": True, "platform": source.platform, "url": source.url, "start_s": source.start_s,
            "code": None, "message": None}


def _human(d: dict[str, Any]) -> str:
    from classifier.sources.links import format_time

    shown = d["text"] if len(d["text"]) <= 60 else d["text"][:57] + "..."
    if d["ok"]:
        start = "from the default place" if d["start_s"] is None else f"from {format_time(d['start_s'])}"
        return f"{shown}\n  ok    {d['platform']:<10} {d['url']}  {start}"
    return f"{shown}\n  no    {d['code']:<10} {d['message']}"


def _texts(args: argparse.Namespace) -> Iterator[str]:
    yield from args.texts
    if args.file:
        stream = sys.stdin if args.file == "-" else open(args.file, encoding="utf-8")
        with stream:
            for line in stream:
                if line.strip():
                    yield line.rstrip("\r\n")


def cmd_link(settings: Settings, args: argparse.Namespace) -> int:
    if not args.texts and not args.file:
        raise errors.BadRequest("Give one or more message texts, e.g. spy link \"who is this at 1:02:03 "
                                "https://youtu.be/...\" (or --file FILE, one message a line).")
    all_ok = True
    for text in _texts(args):
        d = read(text, settings, at=args.at, reply=args.reply)
        all_ok &= d["ok"]
        print(json.dumps(d, ensure_ascii=False) if args.json else _human(d))
    return 0 if all_ok else 1


def register(sub: Any) -> None:
    sp = sub.add_parser("link", help="what the bot understands from message texts (no fetching)")
    sp.add_argument("texts", nargs="*", metavar="TEXT", help="a message as a user would send it (one per argument)")
    sp.add_argument("--file", help="read more messages from FILE, one a line ('-': standard input)")
    sp.add_argument("--at", help="an explicit time, as Discord's at: option or --at (wins over any other)")
    sp.add_argument("--reply", metavar="TEXT", help="the message these texts answer (its link is used when they have none)")
    sp.add_argument("--json", action="store_true",
                    help='one JSON object a line: {"text", "ok", "platform", "url", "start_s", "code", "message"}')
    sp.set_defaults(func=cmd_link)
