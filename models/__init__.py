"""The model files (models/<name>/params.json, labels.txt, MODEL_CARD.md), installed as `classifier.model.files`.

pyproject.toml maps this package onto the top-level models/ folder; `classifier.model.backbone.models_root`
reads it with importlib.resources, so a wheel install finds the files as well as a checkout does.
"""
