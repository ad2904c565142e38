"""`spy export` and TensorFlow Serving mode: the SavedModel loaded back against the in-process network,
the blocking TF Serving client and the service's TF Serving mode against a loopback stand-in that runs the
exported SavedModel for real (tests/fakes/tfserving.py).

One export per module (about 10 s on two cores): through the CLI, with a small artist head stacked on top.
The tests that need the export or the real network are marked slow; the rest take milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import re
import socket
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from classifier import errors
from classifier.model import heads
from classifier.model.backbone import Backbone, BackboneOutput
from classifier.model.heads import Dataset
from classifier.serve import http as service
from classifier.serve import tfserving
from classifier.serve.batcher import ModelWorker
from classifier.settings import Settings
from classifier.store import registry
from classifier.store.index import Index
from classifier.training import export
from spy import cli
from tests.fakes.tfserving import FakeTFServing, Request, serving_in_thread
from tests.float32 import assert_close_scaled
from tests.test_service import TOKEN, WAV, running


def _log_mel_like(n: int, seed: int) -> np.ndarray:
    """Patches in the range real log-mel patches have (log10(1 + 1e4 * mel) lies in about [0, 4.5])."""
    return np.random.default_rng(seed).uniform(0.0, 4.5, (n, 187, 96)).astype(np.float32)


def _head(settings: Settings) -> heads.Head:
    """A small head trained for two epochs on random features, saved and registered as the active model."""
    rng = np.random.default_rng(3)
    n, labels = 60, ("Alpha", "Beta", "Gamma")
    ds = Dataset(embedding=rng.normal(size=(n, 200)).astype(np.float32),
                 pooled=rng.normal(1.0, 2.0, size=(n, 1506)).astype(np.float32),
                 starts=np.zeros(n), y=np.arange(n) % 3, track=np.arange(n) // 6, labels=labels)
    cfg = heads.HeadConfig(hidden=16, epochs=2)
    model, mean, scale = heads.fit(ds, cfg)
    head = heads.Head("head-export-test", labels, "msd_musicnn", cfg, mean, scale, model, threshold=0.42)
    folder = head.save(settings.heads_dir / head.id)
    with Index(settings.database) as index:
        index.register_model(head.id, arch=head.arch, path=folder, artists=3, summary={}, activate=True)
    return head


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, backbone: Backbone) -> Iterator[tuple[Path, Settings]]:
    """`spy export --model msd_musicnn --with-head --out <tmp>/export`, run through the CLI's main()."""
    tmp = tmp_path_factory.mktemp("export")
    settings = Settings(data_dir=tmp / "data")
    _head(settings)
    registry.forget_cached()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)                                  # no stray .env
        mp.setenv("SPY_DATA_DIR", str(settings.data_dir))
        rc = cli.main(["export", "--out", str(tmp / "export"), "--model", "msd_musicnn", "--with-head"])
    assert rc == 0
    yield tmp / "export", settings


@pytest.fixture(scope="module")
def loaded(exported: tuple[Path, Settings]) -> Any:
    import tensorflow as tf

    return tf.saved_model.load(str(exported[0] / "msd_musicnn" / "1"))


def _call(loaded: Any, signature: str, x: np.ndarray) -> dict[str, np.ndarray]:
    import tensorflow as tf

    return {k: v.numpy() for k, v in loaded.signatures[signature](log_mel=tf.constant(x)).items()}


@contextlib.contextmanager
def unavailable(detail: str) -> Iterator[None]:
    """Expect ClassifierUnavailable whose log detail (not the user's sentence) matches `detail`."""
    with pytest.raises(errors.ClassifierUnavailable) as info:
        yield
    assert re.search(detail, info.value.detail or ""), info.value.detail


def _assert_close(got: BackboneOutput | dict[str, np.ndarray], want: BackboneOutput) -> None:
    """The same network in another graph (SavedModel, TF Serving): equal to float32's promise (tests/float32.py)."""
    for name in export.OUTPUTS:
        g = got[name] if isinstance(got, dict) else getattr(got, name)
        assert_close_scaled(g, getattr(want, name), what=name)


# --- the SavedModel -------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_export_writes_a_tf_serving_layout_with_metadata(exported: tuple[Path, Settings], capsys: Any) -> None:
    base, _ = exported
    model_dir = base / "msd_musicnn"
    assert sorted(p.name for p in model_dir.iterdir()) == ["1"]          # no half-written hidden folder left
    version = model_dir / "1"
    assert (version / "saved_model.pb").is_file() and (version / "variables").is_dir()
    meta = export.read_metadata(version)
    assert meta["model"] == "msd_musicnn" and meta["version"] == 1
    assert meta["signatures"]["serving_default"] == {
        "inputs": {"log_mel": [-1, 187, 96]},
        "outputs": {"tags": [-1, 50], "embedding": [-1, 200], "pooled": [-1, 1506]}}
    assert meta["signatures"]["artists"]["outputs"]["artists"] == [-1, 3]
    assert meta["head"]["labels"] == ["Alpha", "Beta", "Gamma"] and meta["head"]["threshold"] == 0.42
    assert len(meta["tag_labels"]) == 50 and meta["params"]["patch_frames"] == 187
    assert export.next_version(model_dir) == 2


@pytest.mark.slow
def test_saved_model_signatures_are_the_documented_ones(loaded: Any) -> None:
    import tensorflow as tf

    assert set(loaded.signatures) == {"serving_default", "artists"}
    for name, outputs in (("serving_default", {"tags", "embedding", "pooled"}),
                          ("artists", {"tags", "embedding", "pooled", "artists"})):
        fn = loaded.signatures[name]
        (spec,) = fn.structured_input_signature[1].values()
        assert list(fn.structured_input_signature[1]) == ["log_mel"]
        assert spec.shape.as_list() == [None, 187, 96] and spec.dtype == tf.float32
        assert set(fn.structured_outputs) == outputs


@pytest.mark.slow
def test_saved_model_matches_the_in_process_network(loaded: Any, backbone: Backbone, audio_dir: Path) -> None:
    from classifier import pipeline

    real = np.concatenate([x for _, x in pipeline.PatchStream(audio_dir / "loop.wav", backbone.params)])
    x = np.concatenate([real, _log_mel_like(9, 0)])
    assert real.shape == (7, 187, 96)
    _assert_close(_call(loaded, "serving_default", x), backbone.predict(x))


@pytest.mark.slow
def test_out_of_domain_input_takes_the_reference_graph_as_predict_does(loaded: Any, backbone: Backbone) -> None:
    x = _log_mel_like(3, 1) * 1e5        # outside the pruned graph's proof: both fall back to the reference
    _assert_close(_call(loaded, "serving_default", x), backbone.predict(x))


@pytest.mark.slow
def test_artists_signature_is_the_head_on_the_backbone(loaded: Any, backbone: Backbone,
                                                       exported: tuple[Path, Settings]) -> None:
    head = registry.current_head(exported[1].database)          # loaded back from its saved artifact
    assert head is not None
    x = _log_mel_like(6, 2)
    got = _call(loaded, "artists", x)
    want = backbone.predict(x)
    _assert_close(got, want)
    assert_close_scaled(got["artists"], head.predict(want.pooled), what="artists")
    np.testing.assert_allclose(got["artists"].sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_export_refuses_a_taken_version_and_a_head_from_another_backbone(exported: tuple[Path, Settings],
                                                                         backbone: Backbone) -> None:
    base, settings = exported
    with pytest.raises(FileExistsError):
        export.export_backbone(backbone, base, version=1)
    head = registry.current_head(settings.database)
    assert head is not None
    other = heads.Head(head.id, head.labels, "mtt_musicnn", head.config, head.mean, head.scale, head.model)
    with pytest.raises(ValueError, match="mtt_musicnn"):
        export.export_backbone(backbone, base, head=other)


# --- the TF Serving client ------------------------------------------------------------------------------------

def test_request_encoding_gives_every_float32_back_exactly() -> None:
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((2, 187, 96)) * 10.0 ** rng.integers(-8, 8, (2, 187, 96))).astype(np.float32)
    x[0, 0, :3] = [np.nan, np.inf, -np.inf]
    body = json.loads(tfserving.encode_request(x, "serving_default"))
    assert body["signature_name"] == "serving_default" and list(body["inputs"]) == ["log_mel"]
    back = np.asarray(body["inputs"]["log_mel"], np.float32)
    np.testing.assert_array_equal(back, x)     # NaN == NaN here; every finite value bit for bit


@pytest.mark.slow
def test_client_batches_requests_and_matches_the_in_process_network(exported: tuple[Path, Settings],
                                                                    backbone: Backbone) -> None:
    x = _log_mel_like(21, 4)
    with serving_in_thread(exported[0]) as fake, tfserving.TFServingBackbone(fake.url, "msd_musicnn") as client:
        assert client.labels == backbone.labels and client.params == backbone.params
        client.wait_available(10)
        fake.requests.clear()
        got = client.predict(x, batch_size=8)
        empty = client.predict(x[:0])
    assert [(r.verb, r.signature, r.format, r.batch) for r in fake.requests] == [
        ("predict", "serving_default", "inputs", 8), ("predict", "serving_default", "inputs", 8),
        ("predict", "serving_default", "inputs", 5)]
    _assert_close(got, backbone.predict(x))
    assert empty.tags.shape == (0, 50) and empty.pooled.shape == (0, 1506)


@pytest.mark.slow
def test_client_waits_for_a_loading_model(exported: tuple[Path, Settings]) -> None:
    with serving_in_thread(exported[0], loading_s=1.5) as fake, \
            tfserving.TFServingBackbone(fake.url, "msd_musicnn") as client:
        assert client.status()[0]["state"] == "LOADING"
        with unavailable("v1 LOADING"):
            client.wait_available(timeout_s=0.2, poll_s=0.1)
        client.wait_available(timeout_s=10, poll_s=0.2)
        assert client.status()[0]["state"] == "AVAILABLE"


@pytest.mark.slow
def test_client_failures_are_classifier_unavailable(exported: tuple[Path, Settings]) -> None:
    x = _log_mel_like(1, 0)
    with serving_in_thread(exported[0]) as fake:
        with tfserving.TFServingBackbone(fake.url, "mtt_musicnn") as unknown:      # not exported here
            with unavailable("HTTP 404"):
                unknown.predict(x)
            with unavailable("no AVAILABLE version of mtt_musicnn"):
                unknown.wait_available(timeout_s=0.1, poll_s=0.05)
        with tfserving.TFServingBackbone(fake.url, "msd_musicnn", signature="nope") as wrong:
            with unavailable("HTTP 400.*nope"):
                wrong.predict(x)
            with pytest.raises(ValueError, match="187, 96"):
                wrong.predict(np.zeros((1, 96, 187), np.float32))
    with socket.socket() as s:                       # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tfserving.TFServingBackbone(f"http://127.0.0.1:{port}", "msd_musicnn", timeout_s=2) as down:
        with unavailable("ConnectionRefused"):
            down.predict(x)
    with pytest.raises(ValueError, match="http://host:8501"):
        tfserving.TFServingBackbone("tfserving:8501", "msd_musicnn")


@pytest.mark.slow
def test_the_stand_in_answers_the_row_format_too(exported: tuple[Path, Settings], backbone: Backbone) -> None:
    """Other clients may send {"instances": [...]}; the stand-in answers {"predictions": [...]} as TF Serving does."""
    import urllib.request

    x = _log_mel_like(2, 6)
    with serving_in_thread(exported[0]) as fake:
        body = json.dumps({"signature_name": "artists", "instances": [{"log_mel": p.tolist()} for p in x]}).encode()
        req = urllib.request.Request(f"{fake.url}/v1/models/msd_musicnn/versions/1:predict", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            predictions = json.loads(resp.read())["predictions"]
    assert len(predictions) == 2 and set(predictions[0]) == {"tags", "embedding", "pooled", "artists"}
    assert_close_scaled(np.array([p["tags"] for p in predictions]), backbone.predict(x).tags, what="tags")
    assert fake.requests[-1] == Request("POST", "msd_musicnn", 1, "predict", "artists", "instances", 2)


@pytest.mark.slow
def test_a_dropped_client_closes_its_keep_alive_connection(exported: tuple[Path, Settings]) -> None:
    """The service's worker never closes its networks: the socket must not outlive the client (ResourceWarning)."""
    with serving_in_thread(exported[0]) as fake:
        client = tfserving.TFServingBackbone(fake.url, "msd_musicnn")
        client.status()
        (conn,) = client._conns
        sock = conn.sock
        assert sock is not None and sock.fileno() != -1
        del client, conn
        gc.collect()
        assert sock.fileno() == -1


# --- the service in TF Serving mode -----------------------------------------------------------------------------

@pytest.mark.slow
async def test_service_in_tf_serving_mode_matches_the_in_process_service(exported: tuple[Path, Settings],
                                                                         audio_dir: Path, tmp_path: Path) -> None:
    """The wiring the settings hook will do: ModelWorker(loader=tfserving.loader(url)) in make_app."""
    settings = Settings(data_dir=tmp_path / "data", classifier_token=TOKEN, batch_size=16)
    body = (audio_dir / "loop.wav").read_bytes()
    networks: list[tfserving.TFServingBackbone] = []

    def load(name: str) -> tfserving.TFServingBackbone:
        networks.append(tfserving.loader(fake.url, wait_s=30)(name))
        return networks[-1]

    async with FakeTFServing(exported[0]) as fake:
        worker = ModelWorker(("msd_musicnn",), max_batch_size=64, loader=load)
        async with running(service.make_app(settings, worker=worker)) as client:
            resp = await client.post("/v1/genre", data=body, headers=WAV, params={"name": "loop.wav"})
            served = await resp.json()
            metrics = await (await client.get("/metrics")).text()
        for network in networks:
            network.close()
    assert resp.status == 200, served
    predicts = [r for r in fake.requests if r.verb == "predict"]
    assert predicts[0].batch == 1                                        # the worker's warm-up call
    assert sum(r.batch for r in predicts[1:]) == served["slices"] == 7
    assert 'spy_batch_patches_count{model="msd_musicnn"}' in metrics
    in_process = ModelWorker(("msd_musicnn",), max_batch_size=64)
    async with running(service.make_app(settings, worker=in_process)) as client:
        local = await (await client.post("/v1/genre", data=body, headers=WAV, params={"name": "loop.wav"})).json()
    assert [g["label"] for g in served["genres"]] == [g["label"] for g in local["genres"]]
    assert_close_scaled([g["score"] for g in served["genres"]], [g["score"] for g in local["genres"]], what="genres")
    assert_close_scaled([d["score"] for d in served["descriptors"]], [d["score"] for d in local["descriptors"]],
                        what="descriptors")
    assert served["timeline"] == local["timeline"]


async def test_service_is_not_ready_while_tf_serving_is_down(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = Settings(data_dir=tmp_path / "data", classifier_token=TOKEN)
    worker = ModelWorker(("msd_musicnn",), loader=tfserving.loader(f"http://127.0.0.1:{port}", wait_s=0.5))
    from aiohttp.test_utils import TestClient, TestServer

    async with TestClient(TestServer(service.make_app(settings, worker=worker), host="127.0.0.1")) as client:
        assert (await client.get("/healthz")).status == 200
        for _ in range(100):                              # the load gives up after wait_s; readiness never comes
            if worker._thread is not None and not worker._thread.is_alive():
                break
            await asyncio.sleep(0.05)
        assert worker._thread is not None and not worker._thread.is_alive() and not worker.ready
        resp = await client.get("/readyz")
        assert resp.status == 503 and (await resp.json())["error"] == "classifier_down"
