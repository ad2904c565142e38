"""`spy`: the command line. One boundary: SpyErrors become a sentence on stderr and exit code 1.

    spy demo                          generate a library offline, enrol, train, identify a held-out track
    spy genre SOURCE [--at T] [--json]
    spy identify SOURCE [--at T] [--json]
    spy link TEXT... [--json]         what the bot understands from message texts (no fetching)
    spy enrol ARTIST SOURCE_OR_PAGE... [--limit N] [--dry-run] | spy enrol --manifest FILE.csv
    spy artists | spy forget ARTIST|TRACK | spy train [--arch head|seedcnn]
    spy eval --manifest FILE.csv [--query-seconds 30] [--json]
    spy corrections | spy history export PLATFORM CHAT
    spy serve | spy bot | spy export | spy about
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable, Sequence

from classifier import errors, logs
from classifier.settings import Settings, load_settings
from spy import about, chats, enrolling, library, link, query, services

__all__ = ["main", "build_parser"]

log = logging.getLogger("spy")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spy", description="Deep House Spy: who made this track?")
    p.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING (default: SPY_LOG_LEVEL or INFO)")
    sub = p.add_subparsers(dest="command", required=True)


    for module in (query, link, enrolling, library, chats, services, about):
        module.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ValueError as exc:
        print(f"spy: {exc}", file=sys.stderr)
        return 2
    logs.configure(args.log_level or settings.log_level)
    from classifier.audio.features import limit_blas_threads

    limit_blas_threads()
    func: Callable[[Settings, argparse.Namespace], int] = args.func
    try:
        return func(settings, args)
    except errors.SpyError as exc:
        log.debug("failed: %s (%s)", exc.code, exc.detail, exc_info=True)
        print(f"spy: {exc.user_message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("spy: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
