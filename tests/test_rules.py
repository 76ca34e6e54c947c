"""Rules inside the ranking (issue 19): masks, duplicates and MMR diversity, checked against brute force on
small synthetic vectors; one query's lists (recommend, the widget) and the CLI flags."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from prodrec.core.errors import ConfigError
from prodrec.embed.vectors import Embeddings
import prodrec.rank.lists as lists_mod
from prodrec.rank.lists import ListRanker, recommend_lists
from prodrec.rank.recommender import Recommender
from prodrec.rank.rules import Rules, diversity_pool
from prodrec.run.cli import main

N, K = 160, 6


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def world() -> tuple[Recommender, pd.DataFrame, dict[str, np.ndarray]]:
    rng = np.random.default_rng(7)
    ids = [f"p{i:03d}" for i in range(N)]
    img, txt = rng.normal(size=(N, 12)), rng.normal(size=(N, 6))
    img[10], txt[10] = img[11], txt[11]  # p010 and p011: the same product twice (identical vectors)
    img[20] = img[21] + 1e-4  # p020 ~ p021 in the image arm only
    labels = pd.DataFrame({
        "gender": rng.choice(["Men", "Women", None], N, p=[0.45, 0.45, 0.1]),
        "articleType": rng.choice(["Shirts", "Tops", "Shoes", "Bags"], N),
        "in_stock": rng.choice(["True", "false"], N),
        "name": [f"Product {i % 130}" for i in range(N)],  # products i and i + 130 share a name
    }, index=ids)
    rec = Recommender({"image": Embeddings(ids, img), "text": Embeddings(ids, txt)})
    vec = {a: rec.arms[a].vectors for a in rec.arms}
    return rec, labels.reindex(rec.ids), vec


def fused_scores(vec: dict[str, np.ndarray], w: dict[str, float]) -> np.ndarray:
    """All-vs-all fused raw cosines in float64 (independent of the kit's code)."""
    return sum(w[a] * (vec[a].astype(np.float64) @ vec[a].T.astype(np.float64)) for a in vec)


def order(row: np.ndarray) -> np.ndarray:
    """Positions by score descending, ties by position (finite only)."""
    idx = np.flatnonzero(np.isfinite(row))
    return idx[np.lexsort((idx, -row[idx]))]


def test_masks_match_brute_force_and_fill_k(world) -> None:
    rec, lab, vec = world
    rules = Rules.make(same="gender", different="articleType", where=["in_stock=true"])
    lists = ListRanker(rec, ["fused", "image"], K, rules.bind(rec.ids, lab)).rank(np.arange(N))
    g, t, s = lab["gender"].to_numpy(), lab["articleType"].to_numpy(), lab["in_stock"].str.lower().to_numpy()
    ok = (s[None, :] == "true") & ((g[None, :] == g[:, None]) | pd.isna(g)[:, None]) & (t[None, :] != t[:, None])
    np.fill_diagonal(ok, False)
    for mode, score in (("fused", fused_scores(vec, rec.weights)), ("image", vec["image"].astype(np.float64) @ vec["image"].T)):
        masked = np.where(ok, score, -np.inf)
        for q in range(N):
            want = order(masked[q])[:K]
            got = lists[mode].pos[q][lists[mode].pos[q] >= 0]
            assert got.tolist() == want.tolist(), (mode, q)
            np.testing.assert_allclose(lists[mode].score[q][: len(got)], masked[q, want], atol=1e-5)
    n = lists["fused"].lengths()
    assert (n == np.minimum(K, ok.sum(axis=1))).all() and (n == K).mean() > 0.9  # k whenever k qualify


def test_duplicates_collapse_to_the_best_ranked(world) -> None:
    rec, lab, vec = world
    thr = 0.6
    rules = Rules.make(exclude_duplicates=thr)
    lists = ListRanker(rec, ["fused"], K, rules.bind(rec.ids, lab, "name")).rank(np.arange(N))
    score = fused_scores(vec, rec.weights)
    np.fill_diagonal(score, -np.inf)
    names = lab["name"].to_numpy()

    def dup(a: int, b: int) -> bool:
        return names[a] == names[b] or all(vec[x][a] @ vec[x][b] >= thr for x in vec)

    for q in range(N):
        kept = [q]
        for c in order(score[q]):  # the greedy walk, written out
            if len(kept) == K + 1:
                break
            if not any(dup(c, s) for s in kept):
                kept.append(c)
        assert lists["fused"].pos[q].tolist() == kept[1:], q
    assert rec.positions(["p011"])[0] not in lists["fused"].pos[rec.positions(["p010"])[0]]


def test_mmr_matches_a_plain_implementation_and_lambda_one_is_the_ranking(world) -> None:
    rec, lab, vec = world
    lam = 0.4
    lists = ListRanker(rec, ["fused"], K, Rules.make(diversity=lam).bind(rec.ids, lab)).rank(np.arange(N))
    plain = ListRanker(rec, ["fused"], K).rank(np.arange(N))["fused"]
    same = ListRanker(rec, ["fused"], K, Rules.make(diversity=1.0).bind(rec.ids, lab)).rank(np.arange(N))["fused"]
    assert (same.pos == plain.pos).all()
    score = fused_scores(vec, rec.weights)
    np.fill_diagonal(score, -np.inf)
    sim = fused_scores(vec, rec.weights)
    pool_n = diversity_pool(K)
    for q in range(N):
        pool = order(score[q])[:pool_n]
        rel = score[q, pool]
        rel = (rel - rel.min()) / (rel.max() - rel.min())
        picked: list[int] = []
        for _ in range(K):
            best, best_v = None, -np.inf
            for i, c in enumerate(pool):
                if c in picked:
                    continue
                v = lam * rel[i] - (1 - lam) * (max(sim[c, p] for p in picked) if picked else 0.0)
                if v > best_v + 1e-9:
                    best, best_v = c, v
            picked.append(best)
        assert lists["fused"].pos[q].tolist() == picked, q
    # the spread grows: mean pairwise similarity within lists falls
    within = lambda pos: np.mean([sim[np.ix_(p, p)][np.triu_indices(K, 1)].mean() for p in pos])
    assert within(lists["fused"].pos) < within(plain.pos)


def test_rrf_and_zscore_take_rules_too(world) -> None:
    rec, lab, vec = world
    ids = rec.ids.tolist()
    rec3 = Recommender({"image": Embeddings(ids, vec["image"]), "text": Embeddings(ids, vec["text"]),
                        "colour": Embeddings(ids, vec["text"][:, ::-1] + 0.1)})
    assert rec3.calibration == "zscore"
    bound = Rules.make(same="gender").bind(rec3.ids, lab)
    lists = ListRanker(rec3, ["fused", "rrf"], K, bound).rank(np.arange(N))
    plain_pos, plain_val = rec3.topk_positions(K, "fused")
    g = lab["gender"].to_numpy()
    for mode in ("fused", "rrf"):
        pos = lists[mode].pos
        for q in range(N):
            got = pos[q][pos[q] >= 0]
            assert len(got) == K and (pd.isna(g[q]) or (g[got] == g[q]).all())
    free = ListRanker(rec3, ["fused", "rrf"], K).rank(np.arange(N))
    assert (free["fused"].pos == plain_pos).mean() > 0.99
    np.testing.assert_allclose(free["fused"].score, plain_val, atol=1e-4)
    assert (free["rrf"].pos == rec3.topk_positions(K, "rrf")[0]).mean() > 0.99


def test_lists_are_the_same_on_any_number_of_threads(world, monkeypatch: pytest.MonkeyPatch) -> None:
    """A block's candidates are split by products over threads (lists.block_threads); one thread or five, with
    every rule at once and without, the lists, scores and thresholds are the same."""
    rec, lab, _ = world
    bound = Rules.make(same="gender", where=["in_stock=true"], exclude_duplicates=0.6, diversity=0.5
                       ).bind(rec.ids, lab, "name")
    monkeypatch.setattr(lists_mod, "MIN_THREAD_ROWS", 1)
    monkeypatch.setattr(lists_mod, "MIN_THREAD_COLUMNS", 1)
    monkeypatch.setattr(lists_mod, "TILE", 16)  # several tiles per thread
    got = {}
    for threads in (1, 5):
        monkeypatch.setattr(lists_mod, "block_threads", lambda threads=threads: threads)
        got[threads] = [ListRanker(rec, ["fused", "image"], K, rules).rank(np.arange(N)) for rules in (None, bound)]
    for one, many in zip(got[1], got[5]):
        for mode in ("fused", "image"):
            np.testing.assert_array_equal(one[mode].pos, many[mode].pos)
            np.testing.assert_array_equal(one[mode].score, many[mode].score)
            np.testing.assert_array_equal(one[mode].threshold, many[mode].threshold)


@pytest.mark.parametrize("threads", [1, 3])
def test_a_sweep_gives_the_lists_of_blocks_read_alone(world, monkeypatch: pytest.MonkeyPatch, threads: int) -> None:
    """Blocks ranked in catalog order with a Sweep (each block reads the products from itself on and hands
    the later ones' scores on, transposed) give the lists, scores and thresholds of every block read alone,
    with every rule (``where`` is not symmetric) and without, for fused, one arm and reciprocal-rank fusion;
    also a sweep that starts mid-catalog, one that jumps back, and blocks of scattered queries; and z-scored
    fusion (three arms), whose scores are not symmetric (each query's own mean and spread)."""
    rec, lab, vec = world
    rules = Rules.make(same="gender", where=["in_stock=true"], exclude_duplicates=0.6, diversity=0.5)
    bound = rules.bind(rec.ids, lab, "name")
    rec3 = Recommender({"image": Embeddings(rec.ids.tolist(), vec["image"]),
                        "text": Embeddings(rec.ids.tolist(), vec["text"]),
                        "colour": Embeddings(rec.ids.tolist(), vec["text"][:, ::-1] + 0.1)})
    assert rec3.calibration == "zscore" and (rec3.ids == rec.ids).all()
    monkeypatch.setattr(lists_mod, "MIN_THREAD_ROWS", 1)
    monkeypatch.setattr(lists_mod, "MIN_THREAD_COLUMNS", 1)
    monkeypatch.setattr(lists_mod, "TILE", 16)  # several tiles per span
    monkeypatch.setattr(lists_mod, "block_threads", lambda: threads)
    modes = ["fused", "image", "rrf"]
    deeper: list[int] = []  # rows read again deeper: the carried tops hold what a block's own read would
    stream = ListRanker._stream

    def spy(self, mode, qp, c, stats, carry=None):  # type: ignore[no-untyped-def]
        deeper.extend([len(qp)] if c > self.need + lists_mod.MARGIN else [])
        return stream(self, mode, qp, c, stats, carry)

    monkeypatch.setattr(ListRanker, "_stream", spy)
    cuts = [0, 37, 38, 90, 91, 150, N]
    orders = {
        "in order": [np.arange(lo, hi) for lo, hi in zip(cuts[:-1], cuts[1:])],
        "from the middle, then back": [np.arange(60, 100), np.arange(100, N), np.arange(0, 60)],
        "scattered": list(np.array_split(np.random.default_rng(3).permutation(N), 4)),
    }
    for r, bound_rules in ((rec, None), (rec, bound), (rec3, None), (rec3, bound)):
        ranker = ListRanker(r, modes, K, bound_rules)
        for name, blocks in orders.items():
            back = np.argsort(np.concatenate(blocks))
            # the same blocks read alone (a z-score's mean and spread come from one matrix product per block,
            # whose last bits may depend on the block's size: the same blocks compare bit for bit)
            deeper[:] = []
            alone_parts = [ranker.rank(b) for b in blocks]
            alone = {mode: lists_mod.Lists.concat([p[mode] for p in alone_parts], K, []).take(back) for mode in modes}
            alone_deeper, deeper[:] = sum(deeper), []
            sweep = ranker.sweep()
            parts = [ranker.rank(b, sweep) for b in blocks]
            for mode in modes:
                got = lists_mod.Lists.concat([p[mode] for p in parts], K, []).take(back)
                np.testing.assert_array_equal(got.pos, alone[mode].pos, err_msg=f"{name} {mode}")
                np.testing.assert_array_equal(got.score, alone[mode].score, err_msg=f"{name} {mode}")
                np.testing.assert_array_equal(got.threshold, alone[mode].threshold, err_msg=f"{name} {mode}")
            assert sum(deeper) == alone_deeper, name
            carried = {key: held.frontier for (key, _), held in sweep._carry.items()}
            if name == "scattered":
                assert carried == {}
            else:  # the first read of each list (fused, image, rrf's two arm lists) was carried to the end
                assert set(carried) == {"fused", "image", *(f"rrf/{a}" for a in r.arms)}
                assert len(set(carried.values())) == 1


def test_a_sweep_is_not_carried_beyond_the_block_budget(world) -> None:
    """Carried tops that would not fit the block budget are not kept (every block reads every product); the
    lists are the same; a sweep serves only its own ranker."""
    rec, _, _ = world
    ranker = ListRanker(rec, ["fused"], K, budget=64)
    sweep = ranker.sweep()
    blocks = [ranker.rank(b, sweep) for b in np.array_split(np.arange(N), 3)]
    np.testing.assert_array_equal(np.concatenate([b["fused"].pos for b in blocks]), ranker.rank(np.arange(N))["fused"].pos)
    assert sweep._carry == {}
    with pytest.raises(ValueError, match="ranker that made it"):
        ListRanker(rec, ["fused"], K).rank(np.arange(3), sweep)
    with pytest.raises(ValueError, match="ranker that made it"):
        ListRanker(rec, ["fused"], K).rank(np.arange(3), sweep)


def test_duplicates_then_diversity_reuse_the_duplicates_similarities(world, monkeypatch: pytest.MonkeyPatch) -> None:
    """With both rules, MMR reads the similarities the duplicates rule computed, and that rule first compares
    only the best ``need + DUPLICATE_SLACK`` candidates: the lists are those of computing everything anew,
    and the rows that met duplicates early were compared in full."""
    rec, lab, _ = world
    bound = Rules.make(exclude_duplicates=0.6, diversity=0.5).bind(rec.ids, lab, "name")
    widths: list[int] = []
    greedy = ListRanker._greedy

    def spy(self, mode, both, *args):  # type: ignore[no-untyped-def]
        widths.append(both.shape[1])
        return greedy(self, mode, both, *args)

    monkeypatch.setattr(ListRanker, "_greedy", spy)
    reused = ListRanker(rec, ["fused"], K, bound).rank(np.arange(N))["fused"]
    ranker = ListRanker(rec, ["fused"], K, bound)
    assert len(set(widths)) > 1  # some rows compared all their candidates, the others fewer
    assert min(widths) == 1 + ranker.need + lists_mod.DUPLICATE_SLACK
    near = ListRanker._near
    monkeypatch.setattr(ListRanker, "_near", lambda self, *a: (near(self, *a)[0], {}))  # nothing to reuse
    monkeypatch.setattr(lists_mod, "DUPLICATE_SLACK", 10**6)  # every candidate compared at once
    anew = ranker.rank(np.arange(N))["fused"]
    np.testing.assert_array_equal(reused.pos, anew.pos)
    np.testing.assert_array_equal(reused.score, anew.score)
    np.testing.assert_array_equal(reused.threshold, anew.threshold)


def test_one_query_lists_equal_the_block_and_recommend(world) -> None:
    rec, lab, _ = world
    bound = Rules.make(same="gender", exclude_duplicates=True).bind(rec.ids, lab, "name")
    block = ListRanker(rec, ["fused"], K, bound).rank(np.arange(N))["fused"]
    for q in (0, 10, 99):
        one = recommend_lists(rec, rec.ids[q], K, ["fused", "image"], bound)
        assert one["fused"]["id"].tolist() == rec.ids[block.pos[q]].tolist()
        assert list(one["fused"].columns) == ["rank", "id", "score", "image_score", "text_score"]
    free = recommend_lists(rec, rec.ids[5], K, ["fused"], None)["fused"]
    assert free["id"].tolist() == rec.recommend(rec.ids[5], K, "fused")["id"].tolist()


def test_rule_arguments_are_checked(world) -> None:
    rec, lab, _ = world
    with pytest.raises(ConfigError, match="COLUMN=VALUE"):
        Rules.make(where=["in_stock"])
    with pytest.raises(ConfigError, match=r"within \(0, 1\]"):
        Rules.make(exclude_duplicates=1.5)
    with pytest.raises(ConfigError, match=r"within \[0, 1\]"):
        Rules.make(diversity=-0.1)
    with pytest.raises(ConfigError, match="both --same and --different"):
        Rules.make(same="gender", different="gender")
    with pytest.raises(ConfigError, match="did you mean 'gender'"):
        Rules.make(same="gendr").bind(rec.ids, lab)
    r = Rules.make(same="gender,articleType", where={"in_stock": ["true", "True"]}, exclude_duplicates=True)
    assert r.same == ("gender", "articleType") and r.where == (("in_stock", ("true", "True")),)
    assert Rules.from_dict(r.to_dict()) == r and "same gender" in r.describe() and not Rules()


def test_widget_controls_apply_the_rules(demo_dir: Path) -> None:
    pytest.importorskip("ipywidgets")
    from prodrec import load_catalog
    from prodrec.viz.browse import Browser

    cat = load_catalog(demo_dir)
    rng = np.random.default_rng(3)
    img = rng.normal(size=(len(cat), 8))
    img[1] = img[0]  # 90000 and 90001: the same photo
    rec = Recommender({"image": Embeddings(cat.ids, img), "text": Embeddings(cat.ids, rng.normal(size=(len(cat), 4)))})
    b = Browser(rec, cat, k=5)
    b.mode.value = "image"
    b.show_query("90002")
    before = b.compute()["image"]["id"].tolist()
    b.hide_duplicates.value = True
    b.filter.value = "gender"
    b.diversity.value = 0.5
    assert "rules: same gender" in b.status.value and "diversity" in b.status.value
    got = b.compute()["image"]["id"].tolist()
    bound = Rules.make(same="gender", exclude_duplicates=True, diversity=0.5).bind(rec.ids, cat.labels,
                                                                                   cat.schema.name_column)
    assert got == recommend_lists(rec, "90002", 5, ["image"], bound)["image"]["id"].tolist()
    q = cat.labels.loc["90002", "gender"]
    assert (cat.labels.loc[got, "gender"] == q).all() and got != before
    assert len(b.grid.children[0].children) == 6
    b.hide_duplicates.value, b.filter.value, b.diversity.value = False, "none", 1.0
    assert b.compute()["image"]["id"].tolist() == before


def test_cli_recommend_with_rules(demo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["recommend", "--data", str(demo_dir), "--arms", "colour", "--no-learned", "--mode", "colour",
            "--id", "90003", "-k", "4", "--store", str(tmp_path / "store"), "--quiet", "--json"]
    assert main(args + ["--same", "gender", "--where", "articleType=Tshirts", "--exclude-duplicates"]) == 0
    out = json.loads(capsys.readouterr().out)
    recs = out["recommendations"]
    q = out["query"]
    assert out["rules"]["same"] == ["gender"] and out["provenance"]["rules"]["exclude_duplicates"] == 0.98
    assert recs and all(r["gender"] == q["gender"] and r["articleType"] == "Tshirts" for r in recs)
    with pytest.raises(SystemExit) as exited:
        main(args + ["--diversity", "2"])
    assert exited.value.code == 2 and "expected a number within [0, 1]" in capsys.readouterr().err
