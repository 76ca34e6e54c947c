"""Beyond the paper, end to end: the colour arm, the learned arm (never trained on an evaluated product),
the full and withheld protocols, calibrated fusion over three arms, through the API and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from prodrec.core.errors import ConfigError
from prodrec.evaluation.runs import evaluate, weight_grid, weight_sweep
from prodrec.embed.learned import LearnedHead
from prodrec.run.experiment import build_experiment
from prodrec.evaluation.report import describe_beyond, mode_points, pareto_front, protocol_table
from prodrec.data.text import product_sentences

LEARN = {"epochs": 8, "seed": 0}


@pytest.fixture(scope="module")
def big_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 300-product synthetic catalog: enough products outside a 40-product sample to train on."""
    from prodrec.data.demo import write_demo_catalog

    return write_demo_catalog(tmp_path_factory.mktemp("demo300"), n=300, seed=3, image_size=64, progress=False)


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One store for the module: the demo's photos and sentences are embedded once."""
    return tmp_path_factory.mktemp("beyond-store")


def precision(res: pd.DataFrame) -> dict[tuple[str, str], float]:
    p = res[res.metric == "precision"]
    return {(m, lab): v for m, lab, v in zip(p["mode"], p["label"], p["value"])}


@pytest.mark.slow
def test_colour_and_learned_arms_under_both_protocols(big_demo: Path, shared_store: Path) -> None:
    store = shared_store
    exps = {prot: build_experiment(big_demo, 40, 0, colour_model="auto", learned=LEARN, protocol=prot,
                                   store_dir=store, progress=False) for prot in ("full", "withheld")}
    full, held = exps["full"], exps["withheld"]
    assert list(full.recommender.arms) == ["image", "text", "colour", "learned"]
    assert full.recommender.calibration == "zscore"
    assert full.recommender.weights["learned"] == 0.0  # fixed-weight fusion leaves the learned arm out
    # withheld: the evaluated labels are in no sentence, for the text arm and the learned arm's input alike
    labels = list(full.catalog.label_columns)
    assert held.settings["withheld_fields"] == labels
    assert not set(held.text.meta["fields"]) & set(labels) and set(labels) <= set(full.text.meta["fields"])
    sentences = product_sentences(held.catalog.df, held.text.meta["fields"])
    row = held.catalog.df.iloc[0]
    # the label fields are gone from the sentence; the text arm reads the other fields with the label values
    # masked too (exp.catalog keeps the names as written, for captions), and the learned head's key sees that
    assert str(row["subCategory"]) not in sentences[0] and str(row["productDisplayName"]) in sentences[0]
    assert held.text.meta["masked_labels"] == labels and "masked_labels" not in full.text.meta
    for exp in (full, held):
        head = LearnedHead.load(exp.embeddings["learned"].meta["head_path"])
        assert not set(head.train_ids) & set(exp.recommender.ids)  # never trained on an evaluated product
        assert len(head.train_ids) == 300 - 40
        assert exp.embeddings["learned"].meta["training"]["input_models"]["text"] == exp.text.meta["model_id"]
    # the heads differ by protocol (different text inputs), and a re-run finds its head in the store
    assert full.embeddings["learned"].meta["head_path"] != held.embeddings["learned"].meta["head_path"]
    again = build_experiment(big_demo, 40, 0, colour_model="auto", learned=LEARN, protocol="withheld",
                             store_dir=store, progress=False)
    assert again.embeddings["learned"].meta["cache"] == "hit"
    np.testing.assert_allclose(again.embeddings["learned"].vectors, held.embeddings["learned"].vectors)

    # the learned vectors of its training products are kept (outside the sample), for prototypes in its space
    from prodrec import load_catalog
    from prodrec.run.prototypes import outside_prototypes, prototype_arms

    kept = held.outside["learned"]
    head = LearnedHead.load(held.embeddings["learned"].meta["head_path"])
    assert sorted(map(str, kept.ids)) == sorted(map(str, head.train_ids)) and kept.dim == held.embeddings["learned"].dim
    assert not set(map(str, kept.ids)) & set(map(str, held.recommender.ids))
    assert prototype_arms(held) == ["image", "colour", "learned"]
    protos = outside_prototypes(held, load_catalog(big_demo), ["articleType", "baseColour"], members=True,
                                progress=False)
    assert protos.overlap(held.recommender.ids) == 0 and "learned" in protos.member_vectors
    lab = load_catalog(big_demo).labels.reindex([str(i) for i in kept.ids])
    value = lab["baseColour"].value_counts().index[0]
    x = kept.vectors[(lab["baseColour"] == value).to_numpy()]
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    mean = x.mean(0)
    np.testing.assert_allclose(protos.vector("learned", "baseColour", value), mean / np.linalg.norm(mean), atol=1e-5)

    res = evaluate(full.recommender, full.catalog, k=5, n_boot=50, progress=False, protocol="full")
    assert set(res["mode"]) == {"random", "image", "text", "colour", "fused", "rrf", "learned"}
    assert set(res["protocol"]) == {"full"}
    with pytest.raises(ConfigError, match="withheld"):  # the rows can never be labelled with another protocol
        evaluate(held.recommender, held.catalog, k=5, n_boot=10, progress=False, protocol="full")
    p = precision(res)
    assert p[("colour", "baseColour")] > p[("random", "baseColour")] + 0.2  # the drawn colours are found
    assert p[("learned", "articleType")] > p[("random", "articleType")]
    assert p[("learned", "baseColour")] > p[("random", "baseColour")]

    sweep = weight_sweep(full.recommender, full.catalog, weight_grid(["image", "text", "colour"], 0.5), k=5,
                         columns=["articleType", "baseColour"], progress=False)
    assert len(sweep) == 6 * 2 and {"w_image", "w_text", "w_colour"} <= set(sweep.columns)
    wide = sweep.pivot_table(index=["w_image", "w_text", "w_colour"], columns="label", values="precision")
    front = pareto_front(wide.reset_index(), "articleType", "baseColour")
    assert 1 <= len(front) <= len(wide)
    both = pd.concat([res, evaluate(held.recommender, held.catalog, k=5, n_boot=50, progress=False)])
    assert set(both["protocol"]) == {"full", "withheld"}  # taken from each experiment
    table = protocol_table(both)
    assert ("withheld", "baseColour") in table.index and "learned" in table.columns
    assert set(mode_points(both, "articleType", "baseColour", "withheld")["name"]) >= {"colour", "learned"}
    text = describe_beyond(both, sweep.assign(protocol="full"))
    assert "Colour arm" in text and "Learned arm (full)" in text


@pytest.mark.slow
def test_max_train_draws_the_same_products_for_every_training_seed(big_demo: Path, shared_store: Path) -> None:
    """``max_train`` is drawn with the sample's seed: the training seeds of one experiment train on the same
    products (their inputs embedded once), their heads differ; another sample seed draws other products."""
    def head_of(sample_seed: int, train_seed: int) -> LearnedHead:
        exp = build_experiment(big_demo, 40, sample_seed, image_model=None, colour_model="auto",
                               learned={"epochs": 2, "seed": train_seed, "max_train": 100}, store_dir=shared_store,
                               progress=False)
        return LearnedHead.load(exp.embeddings["learned"].meta["head_path"])

    first, second = head_of(0, 0), head_of(0, 1)
    assert len(first.train_ids) == 100 and first.train_ids == second.train_ids
    assert first.provenance()["config"]["seed"] == 0 and second.provenance()["config"]["seed"] == 1
    other = head_of(1, 0)
    assert len(other.train_ids) == 100 and set(other.train_ids) != set(first.train_ids)



def test_learned_arm_is_left_out_with_a_reason_when_nothing_is_outside_the_sample(demo_dir: Path,
                                                                                   tmp_path: Path) -> None:
    exp = build_experiment(demo_dir, None, 0, image_model=None, text_model="auto", learned=LEARN,
                           store_dir=tmp_path / "s", progress=False)
    assert "learned" not in exp.recommender.arms and "two arms" in exp.skipped["learned"]
    with pytest.raises(ConfigError, match="protocol"):
        build_experiment(demo_dir, 10, 0, protocol="partial", store_dir=tmp_path / "s", progress=False)
    with pytest.raises(ConfigError, match="cannot withhold"):
        build_experiment(demo_dir, 10, 0, protocol="withheld", withheld=["nope"], store_dir=tmp_path / "s",
                         progress=False)


@pytest.mark.slow
def test_cli_evaluate_with_three_arms_reports_every_mode(big_demo: Path, shared_store: Path, tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "prodrec.run.cli", "evaluate", "--data", str(big_demo), "--n", "40", "--arms",
           "image,text,colour", "--protocol", "withheld", "--learn-epochs", "5", "-k", "5", "--n-boot", "20",
           "--store", str(shared_store), "--json", "--quiet", "--out", str(tmp_path / "out")]
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    payload = json.loads(out.stdout)
    modes = {r["mode"] for r in payload["results"]}
    assert modes == {"random", "image", "text", "colour", "fused", "rrf", "learned"}
    assert {r["protocol"] for r in payload["results"]} == {"withheld"}
    assert set(payload["results"][0]) >= {"mode", "metric", "label", "value", "ci_low", "ci_high", "n_queries", "k"}
    prov = payload["provenance"]
    assert prov["protocol"] == "withheld" and prov["settings"]["withheld_fields"]
    assert prov["models"]["learned"]["training"]["train_ids"]["count"] == 260
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["provenance"]["settings"]["calibration"] == "zscore"


@pytest.mark.slow
def test_cli_recommend_by_colour(big_demo: Path, shared_store: Path) -> None:
    qid = pd.read_csv(big_demo / "styles.csv", dtype=str)["id"].iloc[0]
    out = subprocess.run([sys.executable, "-m", "prodrec.run.cli", "recommend", "--data", str(big_demo), "--id", qid,
                          "--mode", "colour", "--colour-model", "auto", "--store", str(shared_store),
                          "--json", "--quiet"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    recs = json.loads(out.stdout)["recommendations"]
    query_colour = json.loads(out.stdout)["query"]["baseColour"]
    assert len(recs) == 5 and sum(r["baseColour"] == query_colour for r in recs) >= 3
