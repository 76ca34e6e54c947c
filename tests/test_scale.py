"""The Ray engine (prodrec.embed.ray_engine): same store, vectors, failures and provenance as the local engine; resume
after kill -9; the CLI; clear errors when Ray, a worker's photos or a worker's model are missing.

One local Ray with 2 CPUs serves the module; the CLI subprocesses connect to it with ``--address``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import FakeImageEncoder

from prodrec import load_catalog
from prodrec.embed.arms import ArmSpec, ImageArm, Resolved, TextArm
from prodrec.data.catalog import Catalog
from prodrec.core.errors import ConfigError, MissingDependency
from prodrec.embed.embedding import embed_arm
from prodrec.embed.ray_engine import RayCompute, RayEngineError, _EncodeBatches, ray_compute
from prodrec.embed.store import EmbeddingStore


class FakeTextEncoder:
    """A deterministic sentence 'model' (hash-seeded unit vectors); defined here, so it reaches the Ray
    workers by value."""

    name, dim, choice_reason = "fake-text", 16, "test"

    @property
    def model_id(self) -> str:
        return "fake-text/none"

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "model_id": self.model_id, "dim": self.dim, "device": "cpu",
                "weight_source": "test", "worker_pid": os.getpid()}

    def encode(self, sentences: list[str], batch_size: int = 64, progress: bool = True) -> np.ndarray:
        rows = [np.random.default_rng(int(hashlib.sha256(s.encode()).hexdigest()[:8], 16)).normal(size=self.dim)
                for s in sentences]
        x = np.asarray(rows, dtype=np.float32).reshape(len(sentences), self.dim)
        return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    """A local Ray with 2 CPUs for the whole module; yields its address for other processes."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.ERROR,
             log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def broken_catalog(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    """The demo catalog with one truncated JPEG (its header is fine, decoding fails)."""
    root = Path(shutil.copytree(demo_dir, tmp_path_factory.mktemp("broken") / "cat"))
    photo = root / "images" / "90005.jpg"
    photo.write_bytes(photo.read_bytes()[: int(photo.stat().st_size * 0.6)])
    cat = load_catalog(root)
    assert "90005" in cat.ids.tolist()
    return cat


def test_ray_store_equals_the_local_store(ray_address: str, broken_catalog: Catalog, tmp_path: Path) -> None:
    import ray

    cat = broken_catalog
    local = embed_arm(cat, "image", encoder=FakeImageEncoder(), store=tmp_path / "local", batch_size=8,
                      chunk_size=16, progress=False)
    remote = embed_arm(cat, "image", encoder=FakeImageEncoder(), store=tmp_path / "ray", batch_size=8,
                       chunk_size=16, progress=False, engine="ray", engine_options={"workers": 2})
    assert remote.ids.tolist() == local.ids.tolist()
    np.testing.assert_allclose(remote.vectors, local.vectors, atol=1e-6)
    assert remote.failures == local.failures and list(remote.failures) == ["90005"]
    assert "truncated" in remote.failures["90005"]
    # same provenance as the local engine, plus how it was computed
    for key in ("name", "model_id", "dim", "weights", "weight_source", "device", "input"):
        assert remote.meta[key] == local.meta[key], key
    assert remote.meta["engine"] == "ray" and local.meta["engine"] == "local"
    info = remote.meta["ray"]
    assert info["workers"] == 2 and info["gpus_per_worker"] == 0.0 and info["version"] == ray.__version__
    assert info["address"] == "local" and info["started_local_ray"] is False
    assert ray.is_initialized()  # a Ray this process already ran is not shut down by the engine
    (a,), (b,) = EmbeddingStore(tmp_path / "local").entries(), EmbeddingStore(tmp_path / "ray").entries()
    assert (a["products"], a["failures"]) == (b["products"], b["failures"]) == (len(cat) - 1, 1)
    # the Ray store is an ordinary store: a local run over it reads everything, and vice versa
    again = embed_arm(cat, "image", encoder=FakeImageEncoder(), store=tmp_path / "ray", progress=False)
    assert again.meta["cache"] == "hit" and again.meta["ray"]["workers"] == 2
    np.testing.assert_array_equal(again.vectors, remote.vectors)


def test_ray_text_arm_equals_local_and_resumes_a_partial_store(ray_address: str, demo_dir: Path,
                                                              tmp_path: Path) -> None:
    cat = load_catalog(demo_dir)
    local = embed_arm(cat, TextArm(), encoder=FakeTextEncoder(), store=tmp_path / "local", progress=False)
    half = cat.sample(20, seed=0)
    embed_arm(half, TextArm(), encoder=FakeTextEncoder(), store=tmp_path / "ray", progress=False)
    remote = embed_arm(cat, TextArm(), encoder=FakeTextEncoder(), store=tmp_path / "ray", batch_size=8,
                       chunk_size=12, progress=False, engine="ray", engine_options={"workers": 2})
    assert remote.meta["cache"] == "partial" and remote.meta["loaded"] == 20
    assert remote.meta["computed"] == len(cat) - 20
    np.testing.assert_allclose(remote.vectors, local.vectors, atol=1e-6)
    assert remote.meta["worker_pid"] != os.getpid()  # the model was built by an actor, not here


def test_ray_engine_refuses_gpus_this_machine_lacks(ray_address: str, demo_dir: Path, tmp_path: Path) -> None:
    import ray

    if ray.cluster_resources().get("GPU"):
        pytest.skip("this machine has GPUs")
    with pytest.raises(ConfigError, match="--gpus-per-worker 1 but the Ray cluster has 0 GPUs"):
        embed_arm(load_catalog(demo_dir), "image", encoder=FakeImageEncoder(), store=tmp_path, progress=False,
                  engine="ray", engine_options={"gpus_per_worker": 1.0})


@pytest.mark.slow
def test_kill_9_during_prodrec_embed_engine_ray_resumes(ray_address: str, tmp_path: Path) -> None:
    """SIGKILL `prodrec embed --engine ray` mid-run; the rerun computes only what is missing, and the store
    ends with the local engine's vectors."""
    from prodrec.data.demo import write_demo_catalog

    n = 64
    data = write_demo_catalog(tmp_path / "cat", n=n, seed=3, image_size=64, progress=False)
    store = tmp_path / "store"
    base = [sys.executable, "-m", "prodrec.run.cli", "embed", "--data", str(data), "--image-model",
            "efficientnet-lite0", "--text-model", "none", "--batch-size", "8", "--chunk-size", "16",
            "--store", str(store), "--engine", "ray", "--address", ray_address, "--workers", "2"]
    env = dict(os.environ, PRODREC_SLOW_CHUNKS="1.0")  # test hook: sleep after each chunk (embed/store/facade.py)
    proc = subprocess.Popen([*base, "--quiet"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def stored() -> int:
        # an index the writer holds at that instant summarises as an error without counts: 0 for this poll
        return sum(e.get("products", 0) for e in EmbeddingStore(store).entries()) if store.exists() else 0

    deadline = time.time() + 90
    while stored() < 16:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.time() < deadline, "no chunk was stored in 90 s"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    n_done = stored()
    assert 16 <= n_done < n

    done = subprocess.run([*base, "--json"], check=False, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)["models"]["image"]
    assert info["cache"] == "partial" and info["loaded"] == n_done and info["computed"] == n - n_done
    assert info["engine"] == "ray" and info["failures"] == 0

    cat = load_catalog(data)
    resumed = embed_arm(cat, "image", store=store, progress=False)  # everything stored: no model here
    assert resumed.meta["cache"] == "hit" and resumed.meta["ray"]["address"] == ray_address
    assert resumed.meta["weight_source"].startswith("pypi:")
    reference = embed_arm(cat, "image", "efficientnet-lite0", store=tmp_path / "ref", batch_size=8,
                          progress=False)
    np.testing.assert_allclose(resumed.vectors, reference.vectors, atol=1e-5)


# ---------------------------------------------------------------------- errors (no Ray needed)
def test_missing_ray_names_the_extra(monkeypatch: pytest.MonkeyPatch, demo_dir: Path, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    monkeypatch.setitem(sys.modules, "ray.data", None)
    with pytest.raises(MissingDependency, match=r"pip install 'prodrec\[scale\]'"):
        embed_arm(load_catalog(demo_dir), "image", encoder=FakeImageEncoder(), store=tmp_path, progress=False,
                  engine="ray")
    assert not list(tmp_path.glob("image/*/shard-*.npy"))  # nothing was computed the local way instead


def test_bad_engine_options_are_config_errors(demo_dir: Path) -> None:
    pytest.importorskip("ray.data")
    cat = load_catalog(demo_dir)
    resolved = Resolved("image", "fake-hist", "fake-hist/none", 24, "test", {})
    for options, message in (({"workers": 0}, "--workers"), ({"gpus_per_worker": -1.0}, "--gpus-per-worker"),
                             ({"address": " "}, "--address")):
        with pytest.raises(ConfigError, match=message):
            ray_compute(ImageArm(), cat, resolved, batch_size=8, **options)


def test_any_arm_that_declares_its_input_kind_runs_on_ray(demo_dir: Path) -> None:
    """The engine asks the spec (input_kind, inputs), not its class; an arm that declares no kind is refused."""
    pytest.importorskip("ray.data")
    cat = load_catalog(demo_dir)
    resolved = Resolved("captions", "fake-text", "fake-text/none", 16, "test", {})

    class Captions(ArmSpec):  # a text arm that is no TextArm
        name, input_kind = "captions", "text"

        def inputs(self, catalog: Catalog) -> list[str]:
            return [f"caption of {i}" for i in catalog.ids]

    compute = ray_compute(Captions(), cat, resolved, batch_size=4)
    assert compute.kind == "text" and list(compute.inputs) == [f"caption of {i}" for i in cat.ids]
    assert ray_compute(ImageArm(), cat, resolved, batch_size=4).inputs == cat.image_paths

    class Mystery(ArmSpec):
        name = "mystery"

    with pytest.raises(ConfigError, match="mystery arm has no Ray support.*--engine local"):
        ray_compute(Mystery(), cat, resolved, batch_size=4)


def test_a_text_arm_travels_without_its_sentence_cache(demo_dir: Path) -> None:
    cat = load_catalog(demo_dir)
    spec = TextArm(fields=["productDisplayName"])
    sentences = spec.sentences(cat)
    shipped = pickle.loads(pickle.dumps(spec))
    assert shipped._sentences is None and shipped.fields == ("productDisplayName",)
    assert spec.sentences(cat) is sentences  # the driver keeps its cache
    assert shipped.sentences(cat) == sentences


def test_a_worker_that_cannot_see_a_photo_stops_the_run(demo_dir: Path, tmp_path: Path) -> None:
    """Instead of storing "file not found" as the product's failure: the driver can read that photo."""
    pytest.importorskip("ray.data")
    actor = _EncodeBatches("image", ImageArm(), Resolved("image", "x", "x", 24, "", {}),
                           pickle.dumps(FakeImageEncoder()), batch_size=4)
    photo = str(next((demo_dir / "images").glob("*.jpg")))
    batch = {"pos": np.array([0, 1]), "input": np.array([photo, str(tmp_path / "elsewhere.jpg")], dtype=object),
             "readable": np.array([True, True])}
    out = actor(batch)
    assert "cannot read 1 photo(s)" in out["error"][0] and "shared mount" in out["error"][0]
    # a photo the driver could not read either is an ordinary failure, as in the local engine
    out = actor({**batch, "readable": np.array([True, False])})
    assert not out["error"][0] and out["failure"][1] and not out["failure"][0]
    assert out["vector"].shape == (2, 24) and np.isclose(np.linalg.norm(out["vector"][0]), 1.0)

    compute = ray_compute(ImageArm(), load_catalog(demo_dir), Resolved("image", "x", "x", 24, "", {}),
                          batch_size=4)
    assert isinstance(compute, RayCompute)
    compute._stream = iter([actor(batch)])  # what the Ray job would stream back
    compute._expected = {0, 1}
    with pytest.raises(RayEngineError, match="every Ray node must see the catalog at the same path"):
        compute(np.array([0, 1]))


def test_a_worker_without_the_model_says_what_to_install() -> None:
    pytest.importorskip("ray.data")

    class NoModel(ImageArm):
        def build(self, resolved: Resolved) -> Any:
            raise ImportError("No module named 'torch'")

    actor = _EncodeBatches("image", NoModel(), Resolved("image", "x", "efficientnet-lite0/imagenet", 1280, "", {}),
                           None, batch_size=4)
    out = actor({"pos": np.array([3]), "input": np.array(["a.jpg"], dtype=object), "readable": np.array([True])})
    assert "could not build the image model efficientnet-lite0/imagenet" in out["error"][0]
    assert "No module named 'torch'" in out["error"][0] and "prodrec[scale,image]" in out["error"][0]
