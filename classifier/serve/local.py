"""The old name of the in-process classifier: it is now `engine.Engine`, the same engine `spy serve` runs.

Kept only while bot/__main__.py and the bot tests import `LocalClassifier` from here (the bots are being
rewritten on top of `make_classifier`); delete this module once nothing imports it.
"""

from __future__ import annotations

from classifier.serve.engine import Engine as LocalClassifier

__all__ = ["LocalClassifier"]
