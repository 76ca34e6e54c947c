"""Backends: the choice (auto, torch, onnx, openvino), exported models kept once, fp32 exports that give the
torch vectors on real photos and sentences, one store key for every fp32 backend, and int8 calibrated on the
catalog and refused when it moves precision@5."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from prodrec.core.errors import ConfigError, MissingDependency
from prodrec.data.catalog import load_catalog
from prodrec.data.text import product_sentences
from prodrec.embed.arms import ImageArm, TextArm
from prodrec.embed.encoders import backends, export, int8
from prodrec.embed.encoders.backends import AUTO_MIN_ITEMS, BackendRequest, check_backend, check_precision
from prodrec.embed.encoders.export import build_once, folder_name
from prodrec.embed.encoders.int8 import Calibration, calibration_set, compare, precision_at_k
from prodrec.run.cli import main

EXACT = 0.9999


def min_cos(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float(np.min(np.sum(a * b, axis=1)))


# ------------------------------------------------------------------------------------------- the choice
def test_backend_and_precision_are_checked_with_a_suggestion(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(ConfigError, match="did you mean 'onnx'"):
        check_backend("onx")
    with pytest.raises(ConfigError, match="precision must be one of fp32, int8"):
        check_precision("int4")
    with pytest.raises(SystemExit):
        main(["embed", "--backend", "openvin"])
    assert "did you mean 'openvino'" in capsys.readouterr().err


@pytest.fixture
def cpu_only(monkeypatch: pytest.MonkeyPatch) -> dict[str, bool]:
    """No GPU; which exported runtimes count as installed is set by the test."""
    installed = {"onnx": True, "openvino": True}
    monkeypatch.setattr(backends, "gpu_for_torch", lambda: False)
    monkeypatch.setattr(backends, "runtime_installed", lambda b: installed[b])
    monkeypatch.setattr(export, "runtime_installed", lambda b: installed[b])
    return installed


def test_auto_picks_the_fastest_exact_backend_installed(cpu_only: dict[str, bool], tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    key = "m/imagenet|224"
    big, small = AUTO_MIN_ITEMS, AUTO_MIN_ITEMS - 1

    def auto(**kw: Any) -> tuple[str, str]:
        return BackendRequest("auto", models_dir=str(tmp_path), **kw).choose(key)

    assert auto(n_items=big)[0] == backends.CPU_PREFERENCE["image"][0] == "onnx"  # photo models: as measured
    text = BackendRequest("auto", models_dir=str(tmp_path), n_items=big).choose("t/minilm", kind="text")
    assert text[0] == backends.CPU_PREFERENCE["text"][0] == "openvino"
    assert auto(n_items=small) == ("torch", f"auto: {small} inputs do not pay for a first export (from {big})")
    assert auto()[0] == "torch"  # a job of unknown size: no first export
    assert BackendRequest("auto", n_items=big).choose(key)[0] == "torch"  # nowhere to keep an export
    assert BackendRequest("auto", models_dir=str(tmp_path), n_items=big).choose(key, device="cuda")[0] == "torch"
    cpu_only["onnx"] = False
    assert auto(n_items=big)[0] == "openvino"
    cpu_only.update(onnx=True, openvino=False)
    assert auto(n_items=big)[0] == "onnx"
    kept = tmp_path / folder_name(key, "onnx", "fp32")
    kept.mkdir()
    (kept / "manifest.json").write_text("{}")
    assert auto(n_items=1) == ("onnx", "auto: fastest exact backend installed on this CPU (onnx; export kept in "
                                       "the store)")
    cpu_only.update(onnx=False, openvino=True)  # OpenVINO converts a kept ONNX export: it counts as kept for it
    assert auto(n_items=1)[0] == "openvino"
    cpu_only.update(onnx=False, openvino=False)
    name, reason = auto(n_items=big)
    assert name == "torch" and "prodrec[fast]" in reason
    with pytest.raises(MissingDependency, match=r"--backend onnx needs onnxruntime: pip install 'prodrec\[fast\]'"):
        BackendRequest("onnx", models_dir=str(tmp_path)).choose(key)
    monkeypatch.setattr(backends, "gpu_for_torch", lambda: True)
    cpu_only.update(onnx=True, openvino=True)
    assert auto(n_items=big) == ("torch", "auto: a GPU is present (torch runs there)")


def test_int8_runs_on_onnx_runtime_only(cpu_only: dict[str, bool], tmp_path: Path) -> None:
    for backend in ("torch", "openvino"):
        with pytest.raises(ConfigError, match="int8 is made with ONNX Runtime's quantiser: use --backend onnx"):
            BackendRequest(backend, "int8", str(tmp_path)).choose("k")
    assert BackendRequest("auto", "int8", str(tmp_path)).choose("k")[0] == "onnx"


def test_fp32_shares_the_torch_store_key_and_int8_has_its_own(tmp_path: Path) -> None:
    """Resolving needs no model: fp32 on any backend is stored as the torch vectors; int8 is keyed by its
    calibration (and needs one, or a kept model)."""
    pytest.importorskip("onnxruntime")
    arm = ImageArm()
    ids = {b: arm.resolve("efficientnet-lite0", backend=b, models_dir=str(tmp_path)).model_id
           for b in ("torch", "onnx", "auto")}
    assert set(ids.values()) == {"efficientnet-lite0/imagenet"}
    cal = Calibration(("a.jpg",), ("b.jpg",), {}, fingerprint="0123456789abcdef")
    q = arm.resolve("efficientnet-lite0", backend="onnx", precision="int8", models_dir=str(tmp_path),
                    calibration=cal)
    assert q.model_id == "efficientnet-lite0/imagenet@int8v2-onnx-01234567"
    with pytest.raises(ConfigError, match="needs a calibration set drawn from the catalog"):
        TextArm().resolve("all-MiniLM-L6-v2", backend="onnx", precision="int8", models_dir=str(tmp_path))


def test_the_kit_imports_no_runtime_until_an_encoder_is_built() -> None:
    code = """
import sys
import prodrec, prodrec.run.cli, prodrec.embed.encoders.backends
from prodrec.embed.arms import ImageArm
ImageArm().resolve("efficientnet-lite0", backend="auto")
loaded = [m for m in ("onnxruntime", "openvino", "torch", "onnx", "tensorflow") if m in sys.modules]
assert not loaded, loaded
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


# ------------------------------------------------------------------------------------- the models folder
def test_build_once_builds_once_and_never_leaves_half_a_folder(tmp_path: Path) -> None:
    calls = []

    def build(tmp: Path) -> dict[str, Any]:
        calls.append(tmp)
        (tmp / "model.onnx").write_bytes(b"graph")
        return {"what": "test"}

    folder = tmp_path / "models" / "m-onnx-opset17-fp32"
    first = build_once(folder, build, "test")
    again = build_once(folder, build, "test")
    assert len(calls) == 1 and first == again and first["files"]["model.onnx"]["bytes"] == 5
    assert not calls[0].exists()  # built in a temporary sibling, renamed into place

    def broken(tmp: Path) -> dict[str, Any]:
        (tmp / "model.onnx").write_bytes(b"half")
        raise RuntimeError("exporter crashed")

    other = tmp_path / "models" / "n-onnx-opset17-fp32"
    with pytest.raises(RuntimeError, match="exporter crashed"):
        build_once(other, broken, "test")
    assert not other.exists()
    assert sorted(p.name for p in (tmp_path / "models").iterdir() if not p.name.endswith(".lock")) == [folder.name]
    other.mkdir()  # a leftover without a manifest (an older interrupted build) is replaced
    (other / "stale").write_text("x")
    build_once(other, build, "test")
    assert sorted(p.name for p in other.iterdir()) == ["manifest.json", "model.onnx"]


def test_folder_names_say_model_backend_opset_precision() -> None:
    name = folder_name("efficientnet-lite0/imagenet|224", "openvino", "fp32")
    assert name.startswith("efficientnet-lite0-imagenet-") and name.endswith("-openvino-opset17-fp32")
    assert folder_name("clip:tiny/random|/a/tiny", "onnx", "fp32") != folder_name("clip:tiny/random|/b/tiny",
                                                                                 "onnx", "fp32")


# -------------------------------------------------------------------------------------------- int8 check
def test_precision_at_k_matches_a_direct_count() -> None:
    rng = np.random.default_rng(0)
    v = rng.normal(size=(60, 8)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    labels = [str(x) for x in rng.integers(0, 4, 60)]
    labels[3] = None  # a product without the label is no query
    hits = []
    for i in range(60):
        if labels[i] is None:
            continue
        sims = sorted(((float(v[i] @ v[j]), j) for j in range(60) if j != i), reverse=True)[:5]
        hits.append(sum(labels[j] == labels[i] for _, j in sims) / 5)
    assert precision_at_k(v, labels, 5) == pytest.approx(np.mean(hits))


def test_int8_report_refuses_a_change_of_precision() -> None:
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(5, 16))
    lab = rng.integers(0, 5, 300)
    fp32 = centres[lab] + 0.8 * rng.normal(size=(300, 16))
    fp32 = (fp32 / np.linalg.norm(fp32, axis=1, keepdims=True)).astype(np.float32)
    noisy = fp32 + 0.5 * rng.normal(size=fp32.shape)
    noisy = (noisy / np.linalg.norm(noisy, axis=1, keepdims=True)).astype(np.float32)
    cal = Calibration((), tuple(map(str, range(300))), {"type": tuple(map(str, lab))}, "f" * 64)
    same = compare(fp32, fp32, cal)
    assert same["accepted"] and same["max_abs_p5_change"] == 0 and same["cosine_to_fp32"]["min"] == pytest.approx(1)
    worse = compare(fp32, noisy, cal)
    change = precision_at_k(noisy, cal.labels["type"]) - precision_at_k(fp32, cal.labels["type"])
    assert worse["precision_at_5"]["type"]["change"] == pytest.approx(change, abs=1e-4)
    assert change < -0.01 and not worse["accepted"]


def test_calibration_is_drawn_by_content_not_position() -> None:
    inputs = [f"photo{i}.jpg" for i in range(400)]
    keys = [f"digest{i}" for i in range(400)]
    labels = {"colour": [f"c{i % 7}" for i in range(400)]}
    a = calibration_set(inputs, keys, labels, kind="image")
    perm = np.random.default_rng(0).permutation(400)
    b = calibration_set([inputs[i] for i in perm], [keys[i] for i in perm], {"colour": [labels["colour"][i] for i in perm]},
                        kind="image")
    assert a == b and len(a.calibrate) == int8.N_CALIBRATE and len(a.validate) == 400 - int8.N_CALIBRATE
    assert not set(a.calibrate) & set(a.validate)
    assert all(labels["colour"][inputs.index(p)] == c for p, c in zip(a.validate, a.labels["colour"]))
    text = calibration_set(inputs, keys, labels, kind="text")  # dynamic: nothing to calibrate on
    assert text.calibrate == () and len(text.validate) == 400 and text.fingerprint != a.fingerprint


# ---------------------------------------------------------------------------- exports against the framework
@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


def exported_backends() -> list[str]:
    return [b for b in ("onnx", "openvino") if export.runtime_installed(b)]


@pytest.mark.slow
def test_efficientnet_exports_give_the_torch_vectors_on_real_photos(shared_data: Path, models_dir: Path) -> None:
    from prodrec.embed.encoders import get_image_encoder

    if not exported_backends():
        pytest.skip("no exported runtime installed (pip install 'prodrec[fast]')")
    paths = load_catalog(shared_data).sample(48, seed=5).image_paths
    ref = get_image_encoder("efficientnet-lite0").encode(paths, progress=False)
    for b in exported_backends():
        enc = get_image_encoder("efficientnet-lite0", backend=BackendRequest(b, models_dir=str(models_dir)))
        got = enc.encode(paths, progress=False)
        assert min_cos(ref, got) >= EXACT and np.abs(ref - got).max() < 1e-4, b
        d = enc.describe()
        assert d["backend"] == b and d["backend_version"].split()[0] == {"onnx": "onnxruntime"}.get(b, b)
        assert d["model_id"] == "efficientnet-lite0/imagenet" and d["precision"] == "fp32"
        assert Path(d["export"]).name.endswith(f"-{b}-opset17-fp32") and Path(d["export"]).parent == models_dir
    manifest = json.loads((Path(d["export"]) / "manifest.json").read_text())
    again = get_image_encoder("efficientnet-lite0", backend=BackendRequest(b, models_dir=str(models_dir)))
    assert json.loads((Path(again.describe()["export"]) / "manifest.json").read_text()) == manifest  # reused


@pytest.mark.slow
def test_minilm_exports_give_the_torch_vectors_on_real_sentences(shared_data: Path, models_dir: Path) -> None:
    from prodrec.embed.encoders import get_text_encoder

    if not exported_backends():
        pytest.skip("no exported runtime installed (pip install 'prodrec[fast]')")
    cat = load_catalog(shared_data).sample(400, seed=6)
    sents = product_sentences(cat.df, cat.text_columns) + [
        "  spaces around  ", "", "ÉCLAIR façade Ünïcode", " ".join(["truncated"] * 600)]
    ref = get_text_encoder("all-MiniLM-L6-v2").encode(sents, progress=False)
    for b in exported_backends():
        enc = get_text_encoder("all-MiniLM-L6-v2", backend=BackendRequest(b, models_dir=str(models_dir)))
        got = enc.encode(sents, batch_size=32, progress=False)
        assert min_cos(ref, got) >= EXACT and np.abs(ref - got).max() < 1e-4, b
        assert enc.model_id == "sentence-transformers/all-MiniLM-L6-v2" and enc.describe()["backend"] == b
    np.save(models_dir / "minilm-ref.npy", ref[:5])
    (models_dir / "minilm-sents.json").write_text(json.dumps(sents[:5]))


@pytest.mark.slow
def test_a_kept_text_export_runs_without_torch(models_dir: Path) -> None:
    """Once exported, the text arm needs neither torch nor transformers nor sentence-transformers."""
    if not (models_dir / "minilm-ref.npy").is_file() or not export.runtime_installed("onnx"):
        pytest.skip("needs the MiniLM export of the test above")
    code = f"""
import json, sys
import numpy as np
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {{'torch', 'transformers', 'sentence_transformers', 'tensorflow'}}:
            raise ImportError(f'blocked {{name}}')
sys.meta_path.insert(0, Block())
from prodrec.embed.encoders import get_text_encoder
from prodrec.embed.encoders.backends import BackendRequest
enc = get_text_encoder("all-MiniLM-L6-v2", backend=BackendRequest("onnx", models_dir={str(models_dir)!r}))
got = enc.encode(json.load(open({str(models_dir / 'minilm-sents.json')!r})), progress=False)
ref = np.load({str(models_dir / 'minilm-ref.npy')!r})
assert float(np.min(np.sum(got * ref, axis=1))) >= {EXACT}
print("ok", enc.describe()["backend"])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and "ok onnx" in out.stdout, out.stderr[-3000:]


@pytest.mark.slow
def test_clip_towers_export(tmp_path: Path, demo_dir: Path) -> None:
    from prodrec.embed.encoders.clip import ClipEncoder, write_tiny_random_clip

    if not exported_backends():
        pytest.skip("no exported runtime installed (pip install 'prodrec[fast]')")
    ckpt = write_tiny_random_clip(tmp_path / "tiny-clip")
    paths = load_catalog(demo_dir).image_paths[:12]
    texts = ["white sports shoes for women", "a black leather wallet", "x"]
    torch_enc = ClipEncoder(str(ckpt))
    for b in exported_backends():
        enc = ClipEncoder(str(ckpt), backend=BackendRequest(b, models_dir=str(tmp_path / "models")))
        assert min_cos(torch_enc.encode_with_failures(paths, progress=False)[0],
                       enc.encode_with_failures(paths, progress=False)[0]) >= EXACT
        assert min_cos(torch_enc.encode(texts), enc.encode(texts)) >= EXACT
        assert enc.model_id == torch_enc.model_id and enc.describe()["backend"] == b
    with pytest.raises(ConfigError, match="int8 is offered for the image and text arms"):
        ClipEncoder(str(ckpt), backend=BackendRequest("onnx", "int8", str(tmp_path / "models"),
                                                      calibration=Calibration((), ("a",) * 200, {}, "f" * 64)))


@pytest.mark.slow
def test_keras_resnet50_exports_through_tf2onnx(demo_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    pytest.importorskip("tf2onnx")
    pytest.importorskip("onnxruntime")
    from prodrec.embed.encoders.resnet import ResNet50Encoder

    paths = load_catalog(demo_dir).image_paths[:8]
    ref = ResNet50Encoder(weights=None).encode(paths, progress=False)
    enc = ResNet50Encoder(weights=None, backend=BackendRequest("onnx", models_dir=str(tmp_path)))
    assert min_cos(ref, enc.encode(paths, progress=False)) >= EXACT
    d = enc.describe()
    assert d["backend"] == "onnx" and d["exported_with"]["exporter"].startswith("tf2onnx")
    assert d["exported_with"]["framework"].startswith("tensorflow")


def test_resnet50_export_without_tf2onnx_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from prodrec.embed.encoders.resnet import ResNet50Encoder

    enc = ResNet50Encoder.__new__(ResNet50Encoder)
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # import tf2onnx raises ImportError
    with pytest.raises(MissingDependency, match=r"tf2onnx: pip install 'prodrec\[fast\]'"):
        enc.export_onnx(Path("/nonexistent"))


# --------------------------------------------------------------------------------- through the store
@pytest.mark.slow
def test_fp32_backends_fill_one_store(shared_data: Path, tmp_path: Path) -> None:
    from prodrec.embed.embedding import embed_arm

    if not export.runtime_installed("onnx"):
        pytest.skip("onnxruntime not installed")
    cat = load_catalog(shared_data).sample(40, seed=7)
    store = tmp_path / "store"
    onnx = embed_arm(cat, "image", "efficientnet-lite0", store=store, backend="onnx", progress=False)
    assert onnx.meta["cache"] == "miss" and onnx.meta["backend"] == "onnx"
    assert onnx.meta["model_id"] == "efficientnet-lite0/imagenet"
    again = embed_arm(cat, "image", "efficientnet-lite0", store=store, backend="torch", progress=False)
    assert again.meta["cache"] == "hit" and np.array_equal(again.vectors, onnx.vectors)
    fresh = embed_arm(cat, "image", "efficientnet-lite0", store=tmp_path / "other", backend="torch", progress=False)
    assert min_cos(fresh.vectors, onnx.vectors) >= EXACT
    small = embed_arm(cat, "text", "all-MiniLM-L6-v2", store=tmp_path / "auto", progress=False)  # auto, 40 items
    assert small.meta["backend"] == "torch" and not (tmp_path / "auto" / "models").exists()


@pytest.mark.slow
def test_int8_is_calibrated_on_the_catalog_and_guarded_by_precision(shared_data: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from prodrec.embed.embedding import embed_arm
    from prodrec.embed.encoders import get_text_encoder
    from prodrec.embed.store import EmbeddingStore

    pytest.importorskip("onnxruntime")
    cat = load_catalog(shared_data).sample(300, seed=8)
    sents = product_sentences(cat.df, cat.text_columns)
    labels = {c: cat.df[c].tolist() for c in cat.label_columns}
    keys = TextArm().keys(cat, EmbeddingStore(tmp_path / "keys"))

    def request(models: Path, allowed: float) -> BackendRequest:
        cal = calibration_set(sents, keys, labels, kind="text", max_p5_change=allowed)
        return BackendRequest("onnx", "int8", str(models), calibration=cal)

    refuse = request(tmp_path / "strict", -1.0)  # any quantisation moves precision@5 by more than -1
    with pytest.raises(ConfigError, match=r"int8 refused: it moves precision@5 by [-+]\d\.\d{4} \(allowed -1\.0"):
        get_text_encoder("all-MiniLM-L6-v2", backend=refuse)
    monkeypatch.setattr(int8, "_quantize_file", lambda *a: pytest.fail("a kept refusal is not quantised again"))
    with pytest.raises(ConfigError, match="int8 refused"):
        get_text_encoder("all-MiniLM-L6-v2", backend=refuse)
    monkeypatch.undo()

    enc = get_text_encoder("all-MiniLM-L6-v2", backend=request(tmp_path / "lenient", 1.0))
    report = enc.describe()["int8"]
    assert enc.model_id == f"sentence-transformers/all-MiniLM-L6-v2@int8v2-onnx-{report['calibration']['fingerprint'][:8]}"
    assert report["accepted"] and report["products"] == len(sents) == 300
    assert set(report["precision_at_5"]) == set(labels) and 0.5 < report["cosine_to_fp32"]["mean"] < 1.0
    assert report["calibration"]["source"] == "catalog" and "dynamic" in report["method"]

    # through embed_arm: the calibration set is this catalog's, and the store key is the int8 model's own
    store = tmp_path / "store"
    try:
        emb = embed_arm(cat, "text", "all-MiniLM-L6-v2", store=store, backend="onnx", precision="int8", progress=False)
        assert emb.meta["model_id"].endswith(f"@int8v2-onnx-{emb.meta['int8']['calibration']['fingerprint'][:8]}")
    except ConfigError as exc:  # refused on this catalog: the figure is in the message
        assert "int8 refused: it moves precision@5 by" in str(exc)
    manifest = json.loads(next((store / "models").glob("*-int8v*/manifest.json")).read_text())
    drawn = calibration_set(sents, keys, labels, kind="text")
    assert manifest["int8"]["calibration"]["fingerprint"] == drawn.fingerprint
    assert manifest["int8"]["calibration"]["source"].startswith("300 products of")


@pytest.mark.slow
def test_static_int8_of_a_photo_model(shared_data: Path, tmp_path: Path) -> None:
    from prodrec.embed.encoders import get_image_encoder

    pytest.importorskip("onnxruntime")
    cat = load_catalog(shared_data).sample(int8.N_CALIBRATE + int8.MIN_VALIDATE, seed=9)
    cal = calibration_set(cat.image_paths, [str(i) for i in cat.ids],
                          {c: cat.df[c].tolist() for c in cat.label_columns}, kind="image", max_p5_change=1.0)
    enc = get_image_encoder("efficientnet-lite0", backend=BackendRequest("onnx", "int8", str(tmp_path), calibration=cal))
    report = enc.describe()["int8"]
    assert "static QDQ" in report["method"] and report["calibration"]["calibration_inputs"] == int8.N_CALIBRATE
    assert report["products"] == int8.MIN_VALIDATE and report["cosine_to_fp32"]["mean"] > 0.9
    fp32 = get_image_encoder("efficientnet-lite0", backend=BackendRequest("onnx", models_dir=str(tmp_path)))
    photos = cat.image_paths[:8]
    assert 0.9 < min_cos(enc.encode(photos, progress=False), fp32.encode(photos, progress=False)) < 1.0
