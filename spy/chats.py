"""What the bots heard in chats: `spy corrections` and `spy history export`."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from classifier.settings import Settings

__all__ = ["register"]


def cmd_corrections(settings: Settings, args: argparse.Namespace) -> int:
    """List the corrections members made, with whether their audio can be enrolled."""
    from classifier.store.history import AUDIO_NOT_KEPT, Store

    with Store(settings.database) as store:
        records = store.corrections(platform=args.platform, chat=args.chat, pending=args.pending)
    if not records:
        print("No corrections" + (" waiting" if args.pending else "") + " yet.")
        return 0
    print(f"{'id':>5s}  {'corrected (UTC)':16s}  {'chat':24s}  {'answered':24s}  {'correction':24s}  audio")
    for r in records:
        when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(r.corrected_at or r.created))
        said = f"{r.winner or '?'} {100 * r.confidence:.0f}%" + ("" if r.verdict == "identified" else " (unknown)")
        if r.enrolled_track is not None:
            audio = f"enrolled as track #{r.enrolled_track}"
        elif r.is_link:
            audio = f"{r.source} ({r.seconds:.0f} s)"
        else:
            audio = f"{r.source}: {AUDIO_NOT_KEPT}"
        print(f"{r.id:5d}  {when:16s}  {(r.platform + ' ' + r.chat)[:24]:24s}  {said[:24]:24s}  "
              f"{(r.correction or '')[:24]:24s}  {audio}")
    pending = [r for r in records if r.enrolled_track is None and r.is_link]
    print(f"\n{len(records)} correction(s); {len(pending)} link(s) can be enrolled: "
          "spy enrol --from-corrections [ID...], then spy train.")
    return 0


def cmd_history_export(settings: Settings, args: argparse.Namespace) -> int:
    """Write one chat's history as CSV (stdout, or --out FILE)."""
    from classifier.store.history import Store

    with Store(settings.database) as store:
        if args.platform is None or args.chat is None:
            chats = store.chats()
            print("Which chat? Usage: spy history export PLATFORM CHAT [--out FILE]", file=sys.stderr)
            for platform, chat, n, last in chats:
                print(f"  {platform} {chat}  ({n} record(s), last {time.strftime('%Y-%m-%d', time.gmtime(last))})",
                      file=sys.stderr)
            if not chats:
                print("  (no history yet)", file=sys.stderr)
            return 2
        n = store.count(args.platform, args.chat)
        if n == 0:
            print(f"No history for {args.platform} chat {args.chat} (spy history export lists the chats).",
                  file=sys.stderr)
            return 1
        if args.out:
            with open(args.out, "w", newline="", encoding="utf-8") as f:
                n = store.export_csv(args.platform, args.chat, f)
            print(f"Wrote {n} record(s) to {args.out}.", file=sys.stderr)
        else:
            n = store.export_csv(args.platform, args.chat, sys.stdout)
    return 0


def register(sub: Any) -> None:
    sp = sub.add_parser("corrections", help="list the corrections chat members made (spy enrol --from-corrections)")
    sp.add_argument("--platform", default=None, help="only this platform (telegram, discord)")
    sp.add_argument("--chat", default=None, help="only this chat (as `spy history export` lists them)")
    sp.add_argument("--pending", action="store_true", help="only those not enrolled yet")
    sp.set_defaults(func=cmd_corrections)

    sp = sub.add_parser("history", help="the bots' chat history")
    hist = sp.add_subparsers(dest="history_command", required=True)
    sp = hist.add_parser("export", help="write one chat's history as CSV (without a chat: list the chats)")
    sp.add_argument("platform", nargs="?", help="telegram or discord")
    sp.add_argument("chat", nargs="?", help="the chat id")
    sp.add_argument("--out", "-o", default=None, help="CSV file to write (default: standard output)")
    sp.set_defaults(func=cmd_history_export)
