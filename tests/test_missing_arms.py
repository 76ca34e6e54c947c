"""Every product in every arm it has: a product whose photo is missing or broken keeps its text, is
recommended and searched by text, and a mode it lacks says why."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from prodrec.core.errors import RankingError
from prodrec.data.catalog import load_catalog
from prodrec.evaluation.runs import evaluate
from prodrec.run.cli import main
from prodrec.run.experiment import build_experiment


@pytest.fixture(scope="module")
def damaged(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """The demo catalog with one photo deleted and one truncated to a few bytes."""
    root = tmp_path_factory.mktemp("damaged")
    shutil.copytree(demo_dir, root, dirs_exist_ok=True)
    ids = sorted(p.stem for p in (root / "images").glob("*.jpg"))
    gone, broken = ids[0], ids[1]
    (root / "images" / f"{gone}.jpg").unlink()
    data = (root / "images" / f"{broken}.jpg").read_bytes()
    (root / "images" / f"{broken}.jpg").write_bytes(data[: len(data) // 3])  # a truncated JPEG
    return root, gone, broken


def test_products_without_a_usable_photo_keep_their_text(damaged: tuple[Path, str, str], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    root, gone, broken = damaged
    kaggle = load_catalog(root)  # the Kaggle preset studies products with photos: the missing one is dropped
    assert gone not in kaggle.ids and "image files missing" in str(kaggle.report)
    cat = load_catalog(root, require_images=False)
    assert gone in cat.ids and cat.row(gone)["image_note"] == "image file missing"
    assert cat.row(broken)["image_note"].startswith("unreadable image (")  # caught by the header check
    assert cat.report.kept_without_image == 2 and cat.report.arm_inputs["photo"] == len(cat) - 2
    exp = build_experiment(catalog=cat, models={"image": None, "text": "auto", "colour": "auto"},
                           store_dir=tmp_path / "store", progress=False)
    rec = exp.recommender
    assert gone in rec.ids and broken in rec.ids and rec.partial
    assert rec.missing["colour"][gone] == "no usable photo: image file missing"
    assert rec.missing["colour"][broken].startswith("no usable photo: unreadable image (")
    assert len(rec.recommend(gone, k=5, mode="text")) == 5 and len(rec.recommend(gone, k=5, mode="fused")) == 5
    with pytest.raises(RankingError, match=f"'{gone}' has no colour vector \\(no usable photo: image file missing\\)"):
        rec.recommend(gone, k=5, mode="colour")
    assert gone not in set(rec.recommend(cat.ids[5], k=len(cat) - 3, mode="colour")["id"])  # never a colour candidate
    found = exp.searcher().search(str(cat.row(gone)["productDisplayName"]), k=3, mode="text")
    assert gone in set(found["id"])  # searched by its text
    res = evaluate(rec, cat, k=5, progress=False, n_boot=20)
    n = res.set_index(["mode", "metric", "label"])["n_queries"]
    assert n[("colour", "precision", "articleType")] == len(cat) - 2 and n[("text", "precision", "articleType")] == len(cat)

    # the CLI: the same refusal, one line, and the recommendation by text
    args = ["--data", str(root), "--store", str(tmp_path / "store"), "--quiet", "--image-model", "none",
            "--colour-model", "auto"]
    assert main(["recommend", *args, "--id", gone, "--mode", "fused"]) == 2  # the Kaggle preset drops it...
    assert f"{gone}: image file missing" in capsys.readouterr().err  # ...and says why, and how to keep it
    keep = [*args, "--keep-without-photo"]
    assert main(["recommend", *keep, "--id", gone, "--mode", "colour"]) == 2
    assert "no usable photo: image file missing" in capsys.readouterr().err
    assert main(["recommend", *keep, "--id", gone, "--mode", "fused", "--json", "-k", "3"]) == 0
    assert len(json.loads(capsys.readouterr().out)["recommendations"]) == 3
    assert np.isfinite(rec.recommend(broken, k=3, mode="fused")["score"]).all()
    json.dumps(cat.report.to_dict())
