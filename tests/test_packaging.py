"""The wheel: built offline from what the Docker build context holds, it carries every package and every model file.

`models/` sits at the top of the repository (the layout names it) and is installed as `classifier.model.files`;
this builds the wheel the way an image or a user would (`pip wheel`, no editable install, no network), looks
inside it, then installs it with `--target` and reads the model files from that copy, from another folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What the Dockerfile copies into its build (tests/test_deploy.py checks .dockerignore allows exactly these).
SOURCES = ("pyproject.toml", "README.md", "classifier", "bot", "spy", "models")
MODELS = sorted(p.parent.name for p in (ROOT / "models").glob("*/params.json"))

pytestmark = pytest.mark.slow


def _pip(*args: str, cwd: Path) -> None:
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    proc = subprocess.run([sys.executable, "-m", "pip", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`pip wheel --no-deps --no-build-isolation` of a copy of the build context (the checkout stays clean)."""
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(ROOT / name, src / name)
    out = tmp_path_factory.mktemp("dist")
    _pip("wheel", "--no-deps", "--no-build-isolation", "--no-index", "--wheel-dir", str(out), str(src), cwd=src)
    (built,) = out.glob("deep_house_spy-*.whl")
    return built


def test_models_are_found() -> None:
    assert MODELS == ["msd_musicnn", "mtt_musicnn"]


def test_wheel_holds_every_model_file(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for model in MODELS:
        for file in ("params.json", "labels.txt", "MODEL_CARD.md"):
            assert f"classifier/model/files/{model}/{file}" in names, (model, file)
    assert "classifier/model/files/__init__.py" in names and "classifier/py.typed" in names


def test_wheel_holds_every_module_of_the_tree(wheel: Path) -> None:
    """pyproject.toml lists the packages by hand: a package folder missing from that list fails here."""
    names = set(zipfile.ZipFile(wheel).namelist())
    tree = {p.relative_to(ROOT).as_posix() for package in ("classifier", "bot", "spy")
            for p in (ROOT / package).rglob("*.py") if "__pycache__" not in p.parts}
    assert tree - names == set()
    assert not any(n.startswith(("tests/", "bench/", "models/")) for n in names)


def test_installed_wheel_reads_its_own_model_files(wheel: Path, tmp_path: Path) -> None:
    """`pip install --no-deps --target` (no editable install), then load the files from another folder."""
    target = tmp_path / "site"
    _pip("install", "--no-deps", "--no-index", "--target", str(target), str(wheel), cwd=tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = ("import classifier, json; from classifier.model.backbone import load_labels, load_params, models_root;"
            f" print(json.dumps([classifier.__file__, str(models_root())]"
            f" + [[load_params(n).name, len(load_labels(n))] for n in {MODELS!r}]))")
    env = {**os.environ, "PYTHONPATH": str(target)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    module, root, *loaded = json.loads(proc.stdout)
    assert Path(module).is_relative_to(target) and Path(root) == target / "classifier" / "model" / "files"
    assert loaded == [[name, 50] for name in MODELS]
