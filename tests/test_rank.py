"""Exact cosine top-k, fusion and their errors (issue 6, cases 9-10, and the property test)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import unit_rows
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from prodrec.core.errors import ConfigError, UnknownIdError
from prodrec.core.errors import RankingError
from prodrec.rank.recommender import CosineIndex, Recommender
from prodrec.rank import fusion
from prodrec.rank.topk import blocked_search, drop_self, exclude_self, select_topk
from prodrec.embed.vectors import Embeddings


def brute_force(x: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    """Reference top-k scores in float64: full cosine matrix, query removed, sorted descending."""
    xn = x.astype(np.float64) / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
    s = xn @ xn.T
    np.fill_diagonal(s, -np.inf)
    return s, -np.sort(-s, axis=1)[:, :k]


@settings(max_examples=60, deadline=None)
@given(data=st.data(), n=st.integers(2, 24), d=st.integers(1, 6))
def test_topk_matches_brute_force(data: st.DataObject, n: int, d: int) -> None:
    # small integer coordinates make ties common (duplicate and parallel vectors)
    x = data.draw(arrays(np.float32, (n, d), elements=st.integers(-2, 2).map(float)))
    x[np.abs(x).sum(axis=1) == 0, 0] = 1.0
    ids = np.array([str(i) for i in data.draw(st.permutations(list(range(1000, 1000 + n))))], dtype=object)
    k = data.draw(st.integers(1, n - 1))
    idx = CosineIndex(ids, x)
    got_ids, got_scores = idx.topk_many(ids, k)
    full, ref_scores = brute_force(x, ids, k)
    np.testing.assert_allclose(got_scores, ref_scores, atol=1e-5)  # the same k best scores
    pos_of = {pid: i for i, pid in enumerate(ids)}
    for q, row in enumerate(got_ids):
        assert ids[q] not in row  # the query is never its own recommendation
        assert len(set(row.tolist())) == k
        true = np.array([full[q, pos_of[r]] for r in row])
        assert np.all(true >= ref_scores[q, -1] - 1e-5)  # every pick is truly among the best k
    again, _ = idx.topk_many(ids, k)
    np.testing.assert_array_equal(again, got_ids)  # deterministic


@settings(max_examples=40, deadline=None)
@given(n=st.integers(3, 30), k=st.integers(1, 5), data=st.data())
def test_exact_ties_follow_the_id_rule(n: int, k: int, data: st.DataObject) -> None:
    k = min(k, n - 1)
    # rows drawn from three identical directions: scores are exactly 1, 0 or -1, ties everywhere
    basis = np.array([[1, 0], [0, 1], [-1, 0]], dtype=np.float32)
    x = basis[data.draw(arrays(np.int64, n, elements=st.integers(0, 2)))]
    # ids are strings and compare as strings ("10" < "9"): the rule is the string order
    ids = np.array([str(i) for i in data.draw(st.permutations(list(range(n))))], dtype=object)
    got, _ = CosineIndex(ids, x).topk_many(ids, k)
    full, _ = brute_force(x, ids, k)
    for q in range(n):
        want = sorted((j for j in range(n) if j != q), key=lambda j: (-full[q, j], ids[j]))[:k]
        assert got[q].tolist() == [ids[j] for j in want]


def test_ties_broken_by_id() -> None:
    x = np.array([[1, 0], [1, 0], [1, 0], [1, 0], [0, 1]], dtype=np.float32)
    idx = CosineIndex([50, 40, 30, 20, 10], x)
    ids, scores = idx.topk(30, 2)
    assert ids.tolist() == ["20", "40"] and np.allclose(scores, 1.0)
    # ids are strings as the catalog wrote them: leading zeros kept, "007" and "7" are two products
    zeros = CosineIndex(["007", "7", "0007"], x[:3])
    assert zeros.topk("7", 2)[0].tolist() == ["0007", "007"]
    pos, vals = select_topk(np.array([[0.5, 0.9, 0.5, 0.5, 0.1]]), 3)
    assert pos.tolist() == [[1, 0, 2]]


def test_blocked_all_vs_all_equals_one_block() -> None:
    x = unit_rows(300, 16)
    idx = CosineIndex(np.arange(300), x)
    a = idx.topk_positions(None, 5, block=7)
    b = idx.topk_positions(None, 5, block=300)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_allclose(a[1], b[1], rtol=1e-6)  # BLAS sums in a block-dependent order


def test_ranking_errors_are_clear() -> None:
    x = unit_rows(5, 4)
    idx = CosineIndex([1, 2, 3, 4, 5], x)
    with pytest.raises(UnknownIdError, match=r"unknown product id\(s\) '99'"):
        idx.topk(99)
    with pytest.raises(KeyError):  # UnknownIdError is a KeyError too
        idx.topk("01")
    with pytest.raises(RankingError, match="only 4 other products"):
        idx.topk(1, k=5)
    for bad in (0, -1):
        with pytest.raises(RankingError, match="at least 1"):
            idx.topk(1, k=bad)
    with pytest.raises(RankingError, match="integer"):
        idx.topk(1, k=2.5)
    z = x.copy()
    z[2] = 0
    with pytest.raises(RankingError, match=r"zero vectors .*\['3'\]"):
        CosineIndex([1, 2, 3, 4, 5], z)
    z[2] = np.nan
    with pytest.raises(RankingError, match="NaN or inf"):
        CosineIndex([1, 2, 3, 4, 5], z)
    with pytest.raises(RankingError, match="at least 2"):
        CosineIndex([1], x[:1])
    with pytest.raises(RankingError, match="unique"):
        CosineIndex([1, 1, 2, 3, 4], x)


def make_rec(n: int = 40, alpha: float = 0.5, shuffle_text: bool = True) -> tuple[Recommender, np.ndarray, np.ndarray]:
    ids = np.arange(1, n + 1)
    xi, xt = unit_rows(n, 8, 1), unit_rows(n, 6, 2)
    order = np.random.default_rng(0).permutation(n) if shuffle_text else np.arange(n)
    rec = Recommender({"image": Embeddings(ids, xi), "text": Embeddings(ids[order], xt[order])}, alpha=alpha)
    return rec, xi, xt


def test_fused_is_weighted_cosine_and_arms_aligned_by_id() -> None:
    rec, xi, xt = make_rec()
    df = rec.recommend(7, k=5, mode="fused", alpha=0.3)
    s = 0.3 * (xi @ xi[6]) + 0.7 * (xt @ xt[6])
    s[6] = -np.inf
    assert df["id"].tolist() == [str(i) for i in np.argsort(-s, kind="stable")[:5] + 1]
    np.testing.assert_allclose(df["score"], np.sort(s)[::-1][:5], rtol=1e-5)
    np.testing.assert_allclose(df["image_score"], xi[df["id"].astype(int) - 1] @ xi[6], rtol=1e-5)
    # weights= is the general form of alpha
    same = rec.recommend(7, k=5, mode="fused", weights={"image": 3, "text": 7})
    assert same["id"].tolist() == df["id"].tolist()
    # all-vs-all fused (one exact search over concatenated, weighted vectors) agrees with per-query fusion
    ids, _ = rec.recommend_many([7], k=5, mode="fused", alpha=0.3)
    assert ids[0].tolist() == df["id"].tolist()
    for mode in ("image", "text"):
        one = rec.recommend(7, k=5, mode=mode)["id"].tolist()
        assert rec.recommend_many([7], k=5, mode=mode)[0][0].tolist() == one
    assert rec.recommend(7, 5, "fused", alpha=1.0)["id"].tolist() == rec.recommend(7, 5, "image")["id"].tolist()


def test_rrf_and_filter() -> None:
    rec, _, _ = make_rec()
    one = rec.recommend(3, k=4, mode="rrf")
    many, _ = rec.recommend_many([3], k=4, mode="rrf")
    assert one["id"].tolist() == many[0].tolist()
    allowed = rec.ids.astype(int) % 2 == 0
    f = rec.recommend(3, k=4, mode="image", allowed=allowed)
    assert (f["id"].astype(int) % 2 == 0).all()
    with pytest.raises(RankingError, match="pass the filter"):
        rec.recommend(3, k=30, mode="image", allowed=allowed)
    with pytest.raises(RankingError, match="'magic' is not available"):
        rec.recommend(3, mode="magic")
    with pytest.raises(RankingError, match="not present"):
        rec.recommend(3, weights={"colour": 1})
    with pytest.raises(RankingError, match="all be 0"):
        rec.recommend(3, weights={"image": 0, "text": 0})
    with pytest.raises(RankingError, match="alpha"):
        rec.recommend(3, alpha=1.5)


def test_arms_aligned_by_id_and_every_product_kept_in_the_arms_it_has() -> None:
    img = Embeddings(np.array([1, 2, 3, 4]), unit_rows(4, 3), {"kind": "image"})
    txt = Embeddings(np.array([3, 4, 5, 6]), unit_rows(4, 3, 5), {"kind": "text"})
    rec = Recommender({"image": img, "text": txt})
    assert rec.ids.tolist() == ["1", "2", "3", "4", "5", "6"] and rec.partial
    assert rec.missing == {"image": {"5": "no vector", "6": "no vector"}, "text": {"1": "no vector", "2": "no vector"}}
    np.testing.assert_allclose(rec.text.vectors[2], txt.vectors[0], rtol=1e-6)  # id 3 paired with id 3
    # one arm's mode ranks only that arm's products; a query without it is refused with the reason
    assert set(rec.recommend(1, 3, mode="image")["id"]) == {"2", "3", "4"}
    with pytest.raises(RankingError, match="has no text vector \\(no vector\\)"):
        rec.recommend(1, 2, mode="text")
    with pytest.raises(RankingError, match="only 3 products can be ranked"):
        rec.recommend(1, 4, mode="image")
    # fused: every other product, each on the arms it shares with the query (weights renormalised)
    fused = rec.recommend(3, 5, mode="fused")
    assert set(fused["id"]) == {"1", "2", "4", "5", "6"}
    row1 = fused.set_index("id").loc["1"]
    assert row1["score"] == pytest.approx(row1["image_score"]) and np.isnan(row1["text_score"])
    # many-query results: -1 where a query cannot be ranked by a mode
    pos, val = rec.topk_positions(2, "text")
    assert (pos[:2] == -1).all() and np.isneginf(val[:2]).all() and (pos[2:] >= 0).all()
    with pytest.raises(RankingError, match="share no product ids"):
        Recommender({"image": img, "text": Embeddings(np.array([7, 8]), unit_rows(2, 3))})
    only_img = Recommender({"image": img})
    assert only_img.modes == ["image"] and not only_img.partial
    with pytest.raises(RankingError, match="fuses arms, but only"):
        only_img.recommend(1, 2, mode="fused")


def test_fusion_over_the_arms_each_pair_has_matches_a_direct_computation() -> None:
    """Fused scores with products missing arms equal, pair by pair, the weighted mean of the calibrated
    cosines of the arms both have (z-scores over the products that have the arm)."""
    ids = np.arange(12)
    img_ids, txt_ids, col_ids = ids[:9], ids[3:], ids[::2]
    arms = {"image": Embeddings(img_ids, unit_rows(9, 4, 1)), "text": Embeddings(txt_ids, unit_rows(9, 5, 2)),
            "colour": Embeddings(col_ids, unit_rows(6, 3, 3))}
    w = {"image": 0.5, "text": 0.3, "colour": 0.2}
    for calibration in ("raw", "zscore"):
        rec = Recommender(arms, weights=w, calibration=calibration)
        pos, val = rec.topk_positions(11, "fused")
        for row, q in enumerate(rec.ids.astype(int)):  # rows in the recommender's (string) id order
            expected = np.full(12, -np.inf)
            for c in range(12):
                if c == q:
                    continue
                num = den = 0.0
                for name, emb in arms.items():
                    has = {int(i) for i in emb.ids}
                    if q in has and c in has:
                        v = {int(i): x / np.linalg.norm(x) for i, x in zip(emb.ids, emb.vectors)}
                        cos = {j: float(v[q] @ v[j]) for j in has}
                        s = cos[c]
                        if calibration == "zscore":
                            vals = np.array(list(cos.values()))
                            s = (s - vals.mean()) / vals.std()
                        num, den = num + w[name] * s, den + w[name]
                if den:
                    expected[c] = num / den
            order = np.lexsort((np.arange(12), -expected))[:11]
            finite = np.isfinite(expected[order])
            got = rec.ids[pos[row][finite]].astype(int)
            np.testing.assert_array_equal(got, order[finite])
            np.testing.assert_allclose(val[row][finite], expected[order][finite], rtol=1e-4, atol=1e-5)
            assert (pos[row][~finite] == -1).all()


def test_chunked_selection_equals_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    s = np.round(np.random.default_rng(3).random((257, 400)), 2).astype(np.float32)  # many exact ties
    whole = select_topk(s, 9)
    monkeypatch.setattr("prodrec.rank.topk.SELECT_CHUNK", 1000)  # 2 rows per pass
    parts = select_topk(s, 9)
    np.testing.assert_array_equal(whole[0], parts[0])
    np.testing.assert_array_equal(whole[1], parts[1])


def reference_topk(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Independent top-k: a full stable sort per row (best score first, equal scores by smaller position)."""
    pos = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return pos, np.take_along_axis(scores, pos, axis=1)


@pytest.mark.parametrize("heap_from", [0, 1 << 40], ids=["faiss-heap", "argpartition"])
def test_select_topk_equals_a_full_sort_on_both_paths(heap_from: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("prodrec.rank.topk.HEAP_MIN_SCORES", heap_from)
    rng = np.random.default_rng(5)
    s = np.round(rng.standard_normal((64, 300)), 1).astype(np.float32)  # many exact ties at every cut
    s[0] = 0.25  # one value throughout
    s[1, ::2] = -np.inf  # half the row excluded
    s[2] = -np.inf  # nothing finite: positions in order
    s[3, :] = -np.inf
    s[3, [7, 250, 3]] = [1.0, 2.0, 1.0]  # fewer finite entries than k
    s[4, [5, 9]] = np.inf
    s[5] = -np.finfo(np.float32).max  # FAISS's own empty-heap value, as a real score
    for k in (1, 5, 17, 299, 300):
        pos, val = select_topk(s, k)
        want_pos, want_val = reference_topk(s, k)
        assert pos.dtype == np.intp and val.dtype == np.float32
        np.testing.assert_array_equal(pos, want_pos)
        np.testing.assert_array_equal(val, want_val)
    wide = np.round(rng.random((3, 40_000)), 3).astype(np.float32)  # past the default threshold too
    monkeypatch.undo()
    np.testing.assert_array_equal(select_topk(wide, 10)[0], reference_topk(wide, 10)[0])
    as64 = select_topk(s.astype(np.float64), 5)  # other dtypes: argpartition, same rule
    np.testing.assert_array_equal(as64[0], reference_topk(s, 5)[0])


@pytest.mark.parametrize("block", [None, 1, 7, 1000])
def test_blocked_search_equals_brute_force_including_ties(block: int | None) -> None:
    rng = np.random.default_rng(11)
    base = rng.integers(-2, 3, size=(120, 5)).astype(np.float32)  # small integers: exact, often equal scores
    x = np.concatenate([base, base[::-1], base[:30]])  # duplicated rows at other positions
    q = rng.integers(-2, 3, size=(45, 5)).astype(np.float32)
    for k in (1, 6, 40, len(x)):
        pos, val = blocked_search(x, k, queries=q, block=block)
        want_pos, want_val = reference_topk(q.astype(np.float64) @ x.T.astype(np.float64), k)
        assert pos.dtype == np.intp and val.dtype == np.float32
        np.testing.assert_array_equal(pos, want_pos)
        np.testing.assert_array_equal(val, want_val)
    # rows of x as queries: each is left out of its own results, everything else as brute force
    qp = np.array([0, 5, 5, 119, 120, 269, 3])
    full = x.astype(np.float64)[qp] @ x.T.astype(np.float64)
    full[np.arange(len(qp)), qp] = -np.inf
    for k in (1, 9, len(x) - 1):
        pos, val = blocked_search(x, k, query_pos=qp, block=block)
        want_pos, want_val = reference_topk(full, k)
        np.testing.assert_array_equal(pos, want_pos)
        np.testing.assert_array_equal(val, want_val)
        assert not (pos == qp[:, None]).any()
    with pytest.raises(ValueError, match="exactly one"):
        blocked_search(x, 3, queries=q, query_pos=qp)


def test_drop_self_with_the_query_in_and_not_in_its_list() -> None:
    pos = np.array([[4, 7, 2, 9], [3, 1, 8, 6], [5, 0, 2, 4], [1, 2, 3, 4]])
    scores = -np.arange(16, dtype=np.float32).reshape(4, 4)
    query = np.array([7, 5, 4, -1])  # in the list (2nd, last), not in it, not an indexed row
    kept, kept_scores = drop_self(pos, scores, query, 3)
    assert kept.tolist() == [[4, 2, 9], [3, 1, 8], [5, 0, 2], [1, 2, 3]]
    assert kept_scores.tolist() == [[0, -2, -3], [-4, -5, -6], [-8, -9, -10], [-12, -13, -14]]
    only_pos, none = drop_self(pos, None, query, 2)
    assert none is None and only_pos.tolist() == kept[:, :2].tolist()
    # the same as excluding the query before selection, on a search with ties
    s = np.round(np.random.default_rng(2).random((30, 60)), 1).astype(np.float32)
    qp = np.arange(30) * 2
    masked = reference_topk(exclude_self(s.copy(), qp), 5)
    cut = drop_self(*reference_topk(s, 6), qp, 5)
    np.testing.assert_array_equal(cut[0], masked[0])
    np.testing.assert_array_equal(cut[1], masked[1])


def test_exclude_self_leaves_outside_queries_alone() -> None:
    s = np.ones((3, 4), dtype=np.float32)
    exclude_self(s, np.array([2, -1, 0]))
    assert np.isinf(s).sum() == 2 and s[0, 2] == -np.inf and s[2, 0] == -np.inf and (s[1] == 1).all()


def test_rrf_lists_against_a_direct_sum() -> None:
    rng = np.random.default_rng(4)
    lists = [np.stack([rng.permutation(40)[:depth] for _ in range(6)]) for depth in (10, 25, 7)]
    weights = [0.5, 0.3, 0.2]
    fused = fusion.rrf_lists(lists, weights)
    pos, val = fusion.rrf_topk(lists, weights, 5)
    for r, (cand, score) in enumerate(fused):
        want: dict[int, float] = {}
        for lst, w in zip(lists, weights):
            for rank, p in enumerate(lst[r].tolist(), start=1):
                want[p] = want.get(p, 0.0) + w / (fusion.RRF_K + rank)
        assert cand.tolist() == sorted(want)
        np.testing.assert_allclose(score, [want[c] for c in cand.tolist()], rtol=1e-12)
        best = sorted(want, key=lambda p: (-want[p], p))[:5]
        assert pos[r].tolist() == best and val.dtype == np.float32


def test_fused_queries_give_the_zscore_fused_score_by_inner_product() -> None:
    arms = {name: unit_rows(50, d, seed) for seed, (name, d) in enumerate((("image", 6), ("text", 4), ("colour", 3)))}
    w = {"image": 0.5, "text": 0.0, "colour": 0.5}
    qp = np.array([0, 7, 49])
    q, offset = fusion.fused_queries({a: x[qp] for a, x in arms.items()}, w,
                                     {a: fusion.moments(x) for a, x in arms.items()})
    got = q.astype(np.float64) @ np.hstack(list(arms.values())).T.astype(np.float64) - offset[:, None]
    want = sum(w[a] * np.stack([(x @ x[i] - (x @ x[i]).mean()) / (x @ x[i]).std() for i in qp])
               for a, x in arms.items() if w[a])
    np.testing.assert_allclose(got, want, atol=1e-4)
    raw, zero = fusion.fused_queries({a: x[qp] for a, x in arms.items()}, w)  # raw: the weighted cosines
    assert not zero.any()
    np.testing.assert_allclose(raw @ np.hstack(list(arms.values())).T,
                               sum(w[a] * x[qp] @ x.T for a, x in arms.items()), atol=1e-5)
    assert fusion.default_weights(["image", "text", "learned"], 0.3) == {"image": 0.3, "text": 0.7, "learned": 0.0}
    assert fusion.default_weights(["image", "colour"], 0.3) == {"image": 0.5, "colour": 0.5}


def test_three_named_arms_fuse_with_weights_and_rrf() -> None:
    """Any number of named arms: fused scores are the weighted sum of each arm's cosine; RRF uses them all."""
    ids = np.arange(30)
    arms = {name: Embeddings(ids, unit_rows(30, 5, seed)) for seed, name in enumerate(("image", "text", "colour"))}
    rec = Recommender(arms, weights={"image": 1, "text": 1, "colour": 2}, calibration="raw")
    assert rec.modes == ["image", "text", "colour", "fused", "rrf"]
    assert rec.weights == {"image": 0.25, "text": 0.25, "colour": 0.5}
    df = rec.recommend(4, k=3, mode="fused")
    x = {n: a.vectors for n, a in arms.items()}
    s = 0.25 * x["image"] @ x["image"][4] + 0.25 * x["text"] @ x["text"][4] + 0.5 * x["colour"] @ x["colour"][4]
    s[4] = -np.inf
    np.testing.assert_allclose(df["score"], np.sort(s)[::-1][:3], rtol=1e-5)
    assert set(df.columns) >= {"image_score", "text_score", "colour_score"} and "fused_score" not in df.columns
    one = rec.recommend(4, k=3, mode="rrf")
    assert one["id"].tolist() == rec.recommend_many([4], k=3, mode="rrf")[0][0].tolist()
    pair = rec.recommend(4, k=3, mode="fused", weights={"image": 1, "colour": 1})  # a subset of the arms
    s2 = 0.5 * x["image"] @ x["image"][4] + 0.5 * x["colour"] @ x["colour"][4]
    s2[4] = -np.inf
    np.testing.assert_allclose(pair["score"], np.sort(s2)[::-1][:3], rtol=1e-5)


def test_fused_sweep_equals_one_search_per_weighting() -> None:
    rec, _, _ = make_rec(n=60)
    settings = [{"image": a, "text": 1 - a} for a in (0.0, 0.3, 1.0)]
    swept = rec.fused_topk_sweep(settings, k=4, block=7)
    for w, (pos, val) in zip(settings, swept):
        ref_pos, ref_val = rec.topk_positions(4, "fused", weights=w)
        np.testing.assert_allclose(val, ref_val, atol=1e-5)
        assert (pos == ref_pos).mean() > 0.99  # equal up to float-rounding ties


def test_zscore_calibration_standardises_each_arm_per_query() -> None:
    """Under zscore, fused = sum_a w_a (cos_a - mean) / sd per query; the same ranking single and all-vs-all."""
    ids = np.arange(40)
    arms = {name: Embeddings(ids, unit_rows(40, 6, seed)) for seed, name in enumerate(("image", "text", "colour"))}
    rec = Recommender(arms, weights={"image": 1, "text": 1, "colour": 2})
    assert rec.calibration == "zscore"  # auto: another arm than the paper's two is fused
    assert Recommender({n: arms[n] for n in ("image", "text")}).calibration == "raw"  # the paper's fusion
    x = {n: a.vectors for n, a in arms.items()}
    s = sum(w * ((x[n] @ x[n][4]) - (x[n] @ x[n][4]).mean()) / (x[n] @ x[n][4]).std()
            for n, w in (("image", 0.25), ("text", 0.25), ("colour", 0.5)))
    s[4] = -np.inf
    df = rec.recommend(4, k=5, mode="fused")
    np.testing.assert_allclose(df["score"], np.sort(s)[::-1][:5], rtol=1e-4)
    assert df["id"].tolist() == rec.recommend_many([4], k=5, mode="fused")[0][0].tolist()
    with pytest.raises(ConfigError, match="calibration"):
        Recommender(arms, calibration="minmax")


def test_zscore_gives_a_crowded_arm_its_weight() -> None:
    """An arm whose cosines all sit near 1 (a large shared component, like colour histograms) barely moves a
    raw fusion; standardised, its half of the weight decides as much as the other arm's half."""
    rng = np.random.default_rng(0)
    n = 200
    a = unit_rows(n, 8, 1)
    crowded = np.hstack([np.full((n, 1), 10.0), rng.normal(size=(n, 8))]).astype(np.float32)  # cos ~ 0.99
    arms = {"image": Embeddings(np.arange(n), a), "colour": Embeddings(np.arange(n), crowded)}
    w = {"image": 0.5, "colour": 0.5}
    corr = {}
    for mode in ("raw", "zscore"):
        sc = Recommender(arms, weights=w, calibration=mode).scores(0, "fused")
        corr[mode] = {arm: np.corrcoef(sc["fused"], sc[arm])[0, 1] for arm in arms}
    assert corr["raw"]["image"] > 0.95 and corr["raw"]["colour"] < 0.3  # raw: the crowded arm hardly counts
    assert abs(corr["zscore"]["image"] - corr["zscore"]["colour"]) < 0.1  # standardised: equal say


def clustered(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(40, d))
    x = centres[rng.integers(0, 40, n)] + 0.35 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_indexes_agree_with_exact_in_every_mode(kind: str, tmp_path) -> None:
    from prodrec.rank.index import IndexCache

    ids = [f"p{i:05d}" for i in range(1500)]
    arms = {"image": Embeddings(ids, clustered(1500, 24, 1)), "text": Embeddings(ids, clustered(1500, 12, 2)),
            "colour": Embeddings(ids, clustered(1500, 8, 3))}
    exact = Recommender(arms)
    cache = IndexCache(tmp_path / "indexes")
    approx = Recommender(arms, index=kind, index_cache=cache)
    assert approx.index_kind == kind and exact.index_kind == "exact"
    for mode in ("image", "colour", "fused", "rrf"):
        ep, ev = exact.topk_positions(5, mode)
        ap, av = approx.topk_positions(5, mode)
        assert not (ap == np.arange(1500)[:, None]).any()  # the query is never its own neighbour
        overlap = np.mean([len(set(a) & set(e)) / 5 for a, e in zip(ap, ep)])
        assert overlap >= (0.85 if mode == "rrf" else 0.9), (mode, overlap)  # rrf reads 50-deep lists
    # fused scores through the concatenated index are the exact (standardised) fused scores
    ap, av = approx.topk_positions(5, "fused", query_pos=np.arange(20))
    for r in range(20):
        ref = exact.scores(ids[r], "fused")["fused"]
        np.testing.assert_allclose(av[r], ref[ap[r]], rtol=1e-3, atol=1e-3)
    v = arms["text"].vectors[3]
    assert approx.rank_vector(v, "text", k=3)["id"].iloc[0] == ids[3]
    assert set(approx.index_status) == {"image", "colour", "text", "_fused"} and all(
        s.startswith("built") for s in approx.index_status.values())
    again = Recommender(arms, index=kind, index_cache=cache)
    again.topk_positions(5, "fused", query_pos=np.arange(3))
    assert again.index_status["_fused"].startswith("loaded")  # same vectors: reloaded, not rebuilt
    changed = Recommender({**arms, "text": Embeddings(ids, clustered(1500, 12, 9))}, index=kind, index_cache=cache)
    changed.topk_positions(5, "text", query_pos=np.arange(3))
    assert changed.index_status["text"].startswith("built")


def test_deep_lists_on_approximate_indexes_leave_their_params_alone(tmp_path) -> None:
    ids = [f"p{i:05d}" for i in range(600)]
    arms = {"image": Embeddings(ids, clustered(600, 16, 1)), "text": Embeddings(ids, clustered(600, 8, 2))}
    rec = Recommender(arms, index="ivf")
    rec.topk_positions(5, "image", query_pos=np.arange(3))
    before = {name: dict(rec._indexes.arm(name).params) for name in arms}
    pos, val = rec.topk_positions(5, "rrf")  # reads 50-deep lists: searched with more effort
    assert {name: rec._indexes.arm(name).params for name in arms} == before
    depth, lists = fusion.rrf_depth(5, 600), []
    for name in arms:  # the same lists through the indexes' public search, effort asked for explicitly
        ann = rec._indexes.arm(name)
        deep, _ = ann.search(rec.arms[name].vectors, depth + 1, effort=ann.effort_for(depth))
        assert ann.effort_for(depth) > 1
        lists.append(drop_self(deep, None, np.arange(600), depth)[0])
    want_pos, want_val = fusion.rrf_topk(lists, [0.5, 0.5], 5)
    np.testing.assert_array_equal(pos, want_pos)
    np.testing.assert_array_equal(val, want_val)


def test_auto_index_is_exact_for_small_catalogs() -> None:
    rec, _, _ = make_rec(n=60)
    arms = {"image": Embeddings(rec.ids, rec.arms["image"].vectors)}
    assert Recommender(arms, index="auto").index_kind == "exact"
    with pytest.raises(ConfigError):
        Recommender(arms, index="annoy")


@pytest.mark.parametrize("chunk_bytes", [64, 8 * 2**20])
def test_moments_equal_numpys_covariance_in_any_chunking(chunk_bytes: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fusion, "MOMENT_CHUNK_BYTES", chunk_bytes)  # 64 bytes: one row of 8 floats per pass
    x = unit_rows(203, 8)
    mu, cov = fusion.moments(x)
    assert mu.dtype == cov.dtype == np.float32
    np.testing.assert_allclose(mu, x.astype(np.float64).mean(axis=0), atol=1e-7)
    np.testing.assert_allclose(cov, np.cov(x.astype(np.float64), rowvar=False, bias=True), atol=1e-7)
    one_mu, one_cov = fusion.moments(x[:1])
    np.testing.assert_allclose(one_mu, x[0], atol=1e-7)
    np.testing.assert_allclose(one_cov, 0, atol=1e-7)
