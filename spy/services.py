"""Long-running services and artifacts: `spy serve`, `spy bot`, `spy export`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from classifier import errors
from classifier.settings import Settings

__all__ = ["register"]


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    """Run the classifier service (an aiohttp API) until SIGINT/SIGTERM."""
    from classifier.serve.http import serve

    serve(settings, host=args.host, port=args.port)
    return 0


def cmd_bot(settings: Settings, args: argparse.Namespace) -> int:
    """Run the chat bots (bot/__main__.py) until SIGINT/SIGTERM."""
    from bot.__main__ import serve

    return serve(settings)


def cmd_export(settings: Settings, args: argparse.Namespace) -> int:
    """Write the backbones (and, with --with-head, the active artist head) as SavedModels for TF Serving."""
    from classifier.store import registry
    from classifier.training.export import HEAD_SIGNATURE, SIGNATURE, export_models

    head = None
    if args.with_head:
        head = registry.current_head(settings.database)
        if head is None:
            raise errors.NoModel("No trained artist model to export: run `spy train` first.")
    out = Path(args.out) if args.out else settings.data_dir / "export"
    for path in export_models(args.model or ["msd_musicnn", "mtt_musicnn"], out, version=args.version, head=head):
        stacked = head is not None and path.parent.name == head.backbone
        print(f"{path}  signatures: {SIGNATURE}" + (f", {HEAD_SIGNATURE} (head {head.id})" if stacked else ""))
    print(f"Serve with TensorFlow Serving: --model_base_path={out.resolve()}/<model> (docs/deployment.md).")
    return 0


def register(sub: Any) -> None:
    sp = sub.add_parser("serve", help="run the classifier as an HTTP service (for GPU hosts; bots use CLASSIFIER_URL)")
    sp.add_argument("--host", default=None, help="address to bind (default: SPY_SERVE_HOST or 127.0.0.1)")
    sp.add_argument("--port", type=int, default=None, help="port (default: SPY_SERVE_PORT or 8080)")
    sp.set_defaults(func=cmd_serve)

    sp = sub.add_parser("bot", help="run the chat bots (TELEGRAM_TOKEN and/or DISCORD_TOKEN)")
    sp.set_defaults(func=cmd_bot)

    sp = sub.add_parser("export", help="write the network as a TensorFlow SavedModel for TensorFlow Serving")
    sp.add_argument("--out", default=None, help="model base folder (default: <SPY_DATA_DIR>/export)")
    sp.add_argument("--model", action="append", choices=["msd_musicnn", "mtt_musicnn"],
                    help="backbone to export (repeatable; default: both)")
    sp.add_argument("--version", type=int, default=None, help="version number (default: the next free one)")
    sp.add_argument("--with-head", action="store_true",
                    help="also stack the active artist head on its backbone (signature 'artists')")
    sp.set_defaults(func=cmd_export)
