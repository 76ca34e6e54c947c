"""prodrec export (issue 19): the whole catalog's table in three formats, resumable (kill -9), fresh-able
(--update equals a full export, row for row), on Ray, and scored by evaluate --from."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from prodrec import build_experiment, load_catalog
from prodrec.core.errors import ConfigError, UnknownIdError
from prodrec.embed.vectors import Embeddings
from prodrec.evaluation.runs import evaluate
from prodrec.evaluation.tables import evaluate_table
from prodrec.rank import export as export_mod
from prodrec.rank.export import export_table, read_query_ids
from prodrec.rank.state import state_dir
from prodrec.rank.update import update_table
from prodrec.rank.recommender import Recommender
from prodrec.rank.rules import Rules
from prodrec.rank.table import provenance_path, read_provenance, read_table

N = 120
IDS = [f"p{i:03d}" for i in range(N)]


@pytest.fixture(scope="module")
def vectors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    img, txt = rng.normal(size=(N, 10)), rng.normal(size=(N, 5))
    img[3], txt[3] = img[4], txt[4]  # a duplicated product
    return {"image": img, "text": txt, "colour": np.abs(rng.normal(size=(N, 4)))}


@pytest.fixture(scope="module")
def labels() -> pd.DataFrame:
    rng = np.random.default_rng(12)
    return pd.DataFrame({"gender": rng.choice(["Men", "Women"], N), "articleType": rng.choice(list("ABCD"), N),
                         "name": [f"Item {i % 100}" for i in range(N)]}, index=IDS)


def recommender(vectors: dict[str, np.ndarray], keep: np.ndarray | None = None, arms: tuple[str, ...] = ("image", "text"),
                **kw) -> Recommender:
    keep = np.arange(N) if keep is None else keep
    ids = [IDS[i] for i in keep]
    return Recommender({a: Embeddings(ids, vectors[a][keep]) for a in arms}, **kw)


def export(rec: Recommender, out: Path, labels: pd.DataFrame, **kw) -> pd.DataFrame:
    options = dict(labels=labels, name_column="name", k=5, block=16, progress=False, arm_scores=True,
                   captions=["name"])
    options.update(kw)
    export_table(rec, out, **options)
    return read_table(out)


def test_three_formats_hold_the_same_rows_with_provenance(vectors, labels, tmp_path: Path) -> None:
    rec = recommender(vectors)
    frames = [export(rec, tmp_path / f"recs.{ext}", labels, modes=["fused", "image"], provenance={"who": "test"})
              for ext in ("parquet", "csv", "jsonl")]
    for other in frames[1:]:
        pd.testing.assert_frame_equal(frames[0], other, check_dtype=False)
    df = frames[0]
    assert list(df.columns) == ["query_id", "rank", "id", "score", "mode", "image_score", "text_score", "name"]
    assert len(df) == N * 2 * 5 and df["query_id"].tolist()[:10] == ["p000"] * 10
    assert df["mode"].tolist()[:10] == ["fused"] * 5 + ["image"] * 5 and df["rank"].tolist()[:5] == [1, 2, 3, 4, 5]
    assert (df["query_id"] != df["id"]).all()
    assert (df["name"] == labels.loc[df["id"], "name"].to_numpy()).all()
    prov = read_provenance(tmp_path / "recs.parquet")
    assert prov["who"] == "test" and prov["export"]["k"] == 5 and prov["export"]["modes"] == ["fused", "image"]
    assert provenance_path(tmp_path / "recs.csv").is_file() and read_provenance(tmp_path / "recs.jsonl")["export"]
    with pytest.raises(ConfigError, match="ends in .parquet"):
        export_table(rec, tmp_path / "recs.xlsx")


def test_rows_equal_an_independent_top_k(vectors, labels, tmp_path: Path) -> None:
    rec = recommender(vectors, alpha=0.3)
    df = export(rec, tmp_path / "recs.parquet", labels, k=7)
    unit = {a: rec.arms[a].vectors.astype(np.float64) for a in rec.arms}
    cos = {a: v @ v.T for a, v in unit.items()}
    fused = 0.3 * cos["image"] + 0.7 * cos["text"]
    np.fill_diagonal(fused, -np.inf)
    for qi, (q, g) in enumerate(df.groupby("query_id", sort=True)):
        row = fused[qi]
        want = np.lexsort((np.arange(N), -row))[:7]
        assert g["id"].tolist() == rec.ids[want].tolist()
        np.testing.assert_allclose(g["score"], row[want], atol=1e-5)
        np.testing.assert_allclose(g["image_score"], cos["image"][qi, want], atol=1e-5)


def test_query_ids_file(vectors, labels, tmp_path: Path) -> None:
    f = tmp_path / "ids.txt"
    f.write_text("id\np007\n# a comment\np002\n\np007\n")
    assert read_query_ids(f) == ["p007", "p002"]
    df = export(recommender(vectors), tmp_path / "some.csv", labels, ids=read_query_ids(f))
    assert pd.unique(df["query_id"]).tolist() == ["p007", "p002"]
    with pytest.raises(UnknownIdError, match="nope"):
        export(recommender(vectors), tmp_path / "bad.csv", labels, ids=["p001", "nope"])


def test_a_run_stopped_midway_resumes_to_the_same_table(vectors, labels, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    rec = recommender(vectors)
    rules = Rules.make(same="gender", exclude_duplicates=True)
    saved = []

    def stop_after_two() -> None:
        saved.append(1)
        if len(saved) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(export_mod, "_pause_for_tests", stop_after_two)
    out = tmp_path / "recs.parquet"
    with pytest.raises(KeyboardInterrupt):
        export(rec, out, labels, rules=rules)
    assert not out.exists() and len(list(state_dir(out).glob("block-*.npz"))) == 2
    monkeypatch.undo()
    res = export_table(rec, out, labels=labels, name_column="name", k=5, block=16, progress=False, arm_scores=True,
                       captions=["name"], rules=rules)
    assert res.blocks == 8 and res.blocks_computed == 6
    fresh = export(rec, tmp_path / "fresh.parquet", labels, rules=rules)
    pd.testing.assert_frame_equal(read_table(out), fresh)
    # other settings: the old checkpoints are not reused
    assert export_table(rec, out, labels=labels, k=4, block=16, progress=False).blocks_computed == 8


@pytest.mark.parametrize("rules, modes", [
    (Rules(), ["fused", "image"]),
    (Rules.make(same="gender", where=["articleType=A", "articleType=B"]), ["fused"]),
    (Rules.make(different="articleType", exclude_duplicates=0.5), ["fused", "text"]),
    (Rules.make(diversity=0.6), ["image"]),
])
def test_update_equals_a_full_export(vectors, labels, tmp_path: Path, rules: Rules, modes: list[str]) -> None:
    """99% of the catalog exported, then 4 products added, 3 removed, 2 changed (vectors; a name): the
    updated table is the full export's, row for row."""
    rng = np.random.default_rng(5)
    first = np.sort(rng.choice(N, N - 4, replace=False))
    out = tmp_path / "recs.parquet"
    export(recommender(vectors, first), out, labels, modes=modes, rules=rules)
    changed = {a: v.copy() for a, v in vectors.items()}
    changed["image"][[8, 9]] += 0.7
    lab2 = labels.copy()
    lab2.loc["p050", "name"] = "Item 51"  # a caption (and a duplicate name) changes
    now = np.setdiff1d(np.arange(N), first[[5, 60, 90]])
    rec2 = recommender(changed, now)
    res = update_table(rec2, out, labels=lab2, progress=False)
    u = res.update
    assert (u["added"], u["removed"], u["changed"]) == (4, 3, 3)
    full = export(rec2, tmp_path / "full.parquet", lab2, modes=modes, rules=rules)
    pd.testing.assert_frame_equal(read_table(out), full)
    if rules.diversity is None:
        assert u["incremental"] and u["merged"] + u["ranked"] + u["kept"] == len(now)
        assert u["ranked"] < len(now) and u["kept"] > 0
    else:  # MMR's pool is not kept: a removed product may have been in it
        assert not u["incremental"] and "diversity" in u["why"]
    assert "update:" in res.summary()
    # a second update with nothing changed keeps every list
    again = update_table(rec2, out, labels=lab2, progress=False)
    assert again.update["added"] == again.update["changed"] == again.update["removed"] == 0
    pd.testing.assert_frame_equal(read_table(out), full)


def test_update_of_whole_catalog_modes_ranks_everything_and_says_why(vectors, labels, tmp_path: Path) -> None:
    arms = ("image", "text", "colour")  # zscore calibration
    out = tmp_path / "recs.csv"
    export(recommender(vectors, np.arange(N - 2), arms), out, labels, modes=["fused", "rrf"])
    rec2 = recommender(vectors, None, arms)
    res = update_table(rec2, out, labels=labels, progress=False)
    assert not res.update["incremental"] and "reciprocal-rank" in res.update["why"]
    pd.testing.assert_frame_equal(read_table(out), export(rec2, tmp_path / "full.csv", labels, modes=["fused", "rrf"]))
    with pytest.raises(ConfigError, match="arms"):
        update_table(recommender(vectors), out, labels=labels, progress=False)
    with pytest.raises(ConfigError, match="no complete export state"):
        update_table(rec2, tmp_path / "none.csv", labels=labels, progress=False)


def test_update_from_a_changed_catalog_embeds_only_what_is_new(demo_dir: Path, tmp_path: Path) -> None:
    """A real catalog edit: products added and removed, one photo and one name changed. The store embeds only
    the new photos; the table equals a full export of the new catalog."""
    root = Path(shutil.copytree(demo_dir, tmp_path / "cat"))
    styles = pd.read_csv(demo_dir / "styles.csv", dtype=str)
    store = tmp_path / "store"
    styles[~styles["id"].isin(["90040", "90041", "90042"])].to_csv(root / "styles.csv", index=False)
    exp = build_experiment(root, arms=["colour"], store_dir=store, progress=False)
    out = tmp_path / "recs.jsonl"
    exp.export(out, k=4, rules=Rules.make(same="gender"), captions=["productDisplayName"], progress=False)
    edited = styles[styles["id"] != "90005"].copy()
    edited.loc[edited["id"] == "90007", "productDisplayName"] = "Renamed product"
    edited.to_csv(root / "styles.csv", index=False)
    Image.new("RGB", (96, 96), (255, 0, 0)).save(root / "images" / "90009.jpg")
    exp2 = build_experiment(root, arms=["colour"], store_dir=store, progress=False)
    assert exp2.models()["colour"]["computed"] == 4  # three new photos and one changed
    res = exp2.export(out, update=True, progress=False)
    assert (res.update["added"], res.update["removed"], res.update["changed"]) == (3, 1, 2)
    assert res.update["incremental"] and res.provenance["export"]["update"]["added"] == 3
    full = tmp_path / "full.jsonl"
    exp2.export(full, k=4, rules=Rules.make(same="gender"), captions=["productDisplayName"], progress=False)
    pd.testing.assert_frame_equal(read_table(out), read_table(full))
    assert "Renamed product" in set(read_table(out)["productDisplayName"])


def test_evaluate_from_a_table_equals_evaluate(vectors, labels, tmp_path: Path) -> None:
    rec = recommender(vectors)
    export(rec, tmp_path / "recs.parquet", labels, modes=["image", "text", "fused"])
    table = read_table(tmp_path / "recs.parquet")
    got, _, fit = evaluate_table(table, labels, columns=["gender", "articleType"], n_boot=50,
                                 vectors={a: (rec.ids, rec.arms[a].vectors) for a in rec.arms})
    want = evaluate(rec, labels, k=5, modes=["image", "text", "fused"], columns=["gender", "articleType"],
                    n_boot=50, progress=False)
    key = ["mode", "metric", "label"]
    merged = got.merge(want, on=key, suffixes=("_t", "_e"))
    assert len(merged) == len(want) == len(got) and fit.k == 5 and fit.queries["fused"] == N
    np.testing.assert_allclose(merged["value_t"], merged["value_e"], atol=1e-9)


def test_evaluate_a_foreign_table(labels: pd.DataFrame, tmp_path: Path) -> None:
    """Another system's CSV: no rank or mode columns, an unknown query, an unknown product, a short list."""
    rows = [("p000", "p001"), ("p000", "p002"), ("p000", "zzz"), ("p001", "p000"), ("ghost", "p003")]
    f = tmp_path / "theirs.csv"
    pd.DataFrame(rows, columns=["query_id", "id"]).to_csv(f, index=False)
    res, _, fit = evaluate_table(read_table(f), labels, k=3, columns=["gender"], n_boot=20)
    g = labels["gender"]
    p0 = ((g["p001"] == g["p000"]) + (g["p002"] == g["p000"])) / 3  # the unknown product is a miss
    p1 = (g["p000"] == g["p001"]) / 3  # two empty slots
    prec = res[(res["mode"] == "table") & (res["metric"] == "precision")]["value"].item()
    assert prec == pytest.approx((p0 + p1) / 2)
    assert fit.unknown_queries == {"table": 1} and fit.unknown_products == {"table": 1} and fit.short_lists["table"] == 1
    cov = res[(res["metric"] == "coverage")]["value"].item()
    assert cov == pytest.approx(3 / N)


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "prodrec.run.cli", *args], capture_output=True, text=True, env=env)


@pytest.mark.slow
def test_kill_9_during_prodrec_export_resumes(demo_dir: Path, tmp_path: Path) -> None:
    """Really SIGKILL `prodrec export` mid-run; the next run computes only the missing blocks and writes the
    table of an uninterrupted run."""
    store = tmp_path / "store"
    base = ["export", "--data", str(demo_dir), "--arms", "colour", "--no-learned", "--store", str(store), "-k", "5",
            "--block", "6", "--same", "gender", "--captions", "--quiet"]
    assert run_cli(*base, "--out", str(tmp_path / "ref.csv")).returncode == 0  # also fills the store
    out = tmp_path / "recs.csv"
    env = dict(os.environ, PRODREC_SLOW_BLOCKS="0.5")  # test hook: sleep after each saved block (rank/export.py)
    proc = subprocess.Popen([sys.executable, "-m", "prodrec.run.cli", *base, "--out", str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(state_dir(out).glob("block-*.npz"))) < 2:
        time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list(state_dir(out).glob("block-*.npz")))
    assert 2 <= done < 8 and not out.exists()
    again = run_cli(*base, "--out", str(out), "--json")
    assert again.returncode == 0, again.stderr
    info = json.loads(again.stdout)
    assert info["blocks"] == 8 and info["blocks_computed"] == 8 - done
    pd.testing.assert_frame_equal(read_table(out), read_table(tmp_path / "ref.csv"))


@pytest.mark.slow
def test_ray_engine_writes_the_same_rows(vectors, labels, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    rec = recommender(vectors)
    rules = Rules.make(same="gender", exclude_duplicates=True)
    local = export(rec, tmp_path / "local.parquet", labels, modes=["fused", "rrf"], rules=rules)
    res = export_table(rec, tmp_path / "ray.parquet", labels=labels, name_column="name", k=5, block=16,
                       progress=False, arm_scores=True, captions=["name"], modes=["fused", "rrf"], rules=rules,
                       engine="ray", engine_options={"workers": 2})
    assert res.engine["ray"]["workers"] == 2
    pd.testing.assert_frame_equal(read_table(tmp_path / "ray.parquet"), local)


def test_cli_export_update_and_evaluate_from(demo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from prodrec.run.cli import main

    store = tmp_path / "store"
    base = ["--data", str(demo_dir), "--arms", "colour", "--no-learned", "--store", str(store), "--quiet"]
    assert main(["export", *base, "--out", str(tmp_path / "recs.parquet"), "-k", "3", "--exclude-duplicates",
                 "--arm-scores", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["rows"] == 48 * 3 and out["rules"]["exclude_duplicates"] == 0.98
    assert out["provenance"]["dataset"]["products"] == 48
    assert main(["export", *base, "--update", str(tmp_path / "recs.parquet"), "--json"]) == 0
    upd = json.loads(capsys.readouterr().out)["update"]
    assert upd["incremental"] and upd["kept"] == 48
    assert main(["export", *base, "--update", str(tmp_path / "recs.parquet"), "-k", "4"]) == 2
    assert "drop -k" in capsys.readouterr().err
    assert main(["evaluate", *base, "--from", str(tmp_path / "recs.parquet"), "--n-boot", "20", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["table"]["k"] == 3 and {r["metric"] for r in res["results"]} >= {"precision", "coverage", "ild_colour"}


def test_id_columns_become_text_as_str_would_make_them() -> None:
    """The writer's and reader's id conversion (numpy's, not a Python call per value) gives str(v) for every
    value and None where one is missing, whatever the column held."""
    from prodrec.rank.table import _as_text

    values = ["p1", None, 3, 1.5, float("nan"), "ünï", True, 10**20]
    got = _as_text(pd.Series(values, dtype=object)).tolist()
    assert got == [None if v is None or v != v else str(v) for v in values]
    assert _as_text(pd.Series([7, 8])).tolist() == ["7", "8"] and _as_text(pd.Series([], dtype=object)).tolist() == []
