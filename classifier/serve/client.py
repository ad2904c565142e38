"""The classifier the settings ask for: over HTTP when CLASSIFIER_URL is set, else the engine in this process."""

from __future__ import annotations

from classifier.serve.api import Classifier
from classifier.settings import Settings

__all__ = ["make_classifier"]


def make_classifier(settings: Settings) -> Classifier:
    """The classifier the settings ask for: remote when CLASSIFIER_URL is set, else in-process."""
    if settings.classifier_url:
        from classifier.serve.remote import RemoteClassifier

        return RemoteClassifier(settings)
    from classifier.serve.engine import Engine

    return Engine(settings)
