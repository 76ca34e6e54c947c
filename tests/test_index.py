"""prodrec.rank.index: exact / ivf / hnsw / auto behind one interface, persistence and the on-disk cache."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from prodrec.core.errors import ConfigError, MissingDependency, RankingError
from prodrec.rank.index import (
    AUTO_APPROX_KIND,
    AUTO_EXACT_MAX,
    INDEX_KINDS,
    ExactIndex,
    HNSWIndex,
    IndexCache,
    IVFIndex,
    VectorIndex,
    build_index,
    load_index,
    recall_at_k,
    resolve_kind,
)

N, D, CENTRES = 3000, 32, 30


def mixture(n: int, d: int, seed: int, centres: int = CENTRES, sample_seed: int | None = None) -> np.ndarray:
    """Unit vectors around ``centres`` seeded random centres, each cluster with its own spread."""
    rng = np.random.default_rng(seed)
    cen = rng.standard_normal((centres, d)).astype(np.float32)
    cen /= np.linalg.norm(cen, axis=1, keepdims=True)
    spread = rng.uniform(0.2, 0.6, centres).astype(np.float32)
    r = np.random.default_rng(seed + 1 if sample_seed is None else sample_seed)
    c = r.integers(0, centres, n)
    x = cen[c] + spread[c, None] * r.standard_normal((n, d)).astype(np.float32) / np.sqrt(d)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def brute_force(x: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Full stable sort of every score: best first, equal scores by smaller position."""
    s = q @ x.T
    pos = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return pos, np.take_along_axis(s, pos, axis=1)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return mixture(N, D, seed=0), mixture(400, D, seed=0, sample_seed=99)  # held-out queries, same mixture


@pytest.fixture(scope="module")
def built(data: tuple[np.ndarray, np.ndarray]) -> dict[str, VectorIndex]:
    x, _ = data
    return {kind: build_index(x, kind, seed=0) for kind in ("exact", "ivf", "hnsw")}


def test_exact_equals_brute_force_including_tie_order() -> None:
    rng = np.random.default_rng(3)
    base = rng.integers(-1, 2, size=(300, 8)).astype(np.float32)  # small integers: many exactly equal scores
    x = np.concatenate([base, base[::-1], base[:50]])  # and duplicated rows at other positions
    q = rng.integers(-2, 3, size=(40, 8)).astype(np.float32)
    idx = build_index(x, "exact")
    assert isinstance(idx, ExactIndex) and np.shares_memory(idx.vectors, x)  # float32 input: not copied
    for k in (1, 5, 37):
        pos, scores = idx.search(q, k)
        want_pos, want_scores = brute_force(x, q, k)
        assert pos.dtype == np.intp and scores.dtype == np.float32 and pos.shape == (40, k)
        np.testing.assert_array_equal(pos, want_pos)
        np.testing.assert_array_equal(scores, want_scores)
        if k > 1:
            tied = scores[:, 1:] == scores[:, :-1]
            assert tied.any() and (pos[:, 1:][tied] > pos[:, :-1][tied]).all()
    one_pos, _ = idx.search(q[7], 37)  # one query (matrix-vector path), given as a 1-d vector
    np.testing.assert_array_equal(one_pos[0], brute_force(x, q[7:8], 37)[0][0])


def test_exact_in_blocks_equals_one_product(monkeypatch: pytest.MonkeyPatch,
                                            data: tuple[np.ndarray, np.ndarray]) -> None:
    x, q = data
    whole = ExactIndex(x).search(q, 5)
    monkeypatch.setattr("prodrec.rank.topk.BLOCK_BYTES", 4 * N * 7)  # 7 queries per block
    blocked = ExactIndex(x).search(q, 5)
    np.testing.assert_array_equal(whole[0], blocked[0])


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_recall_and_scores(kind: str, data: tuple[np.ndarray, np.ndarray],
                                       built: dict[str, VectorIndex]) -> None:
    x, q = data
    exact_pos, _ = built["exact"].search(q, 5)
    idx = built[kind]
    assert kind != "ivf" or idx.params["codes"] == "sq8"  # the default: 8-bit lists, exact scores
    assert idx.kind == kind and (idx.ntotal, idx.dim) == (N, D)
    pos, scores = idx.search(q, 5)
    assert recall_at_k(pos, exact_pos) >= 0.9
    np.testing.assert_allclose(scores, np.einsum("md,mkd->mk", q, x[pos]), rtol=1e-5, atol=1e-5)
    assert (np.diff(scores, axis=1) <= 0).all()  # best first
    assert all(len(set(row)) == 5 for row in pos.tolist())
    tuned = "nprobe" if kind == "ivf" else "efSearch"
    assert isinstance(idx.params[tuned], int) and idx.params[tuned] >= 1
    cal = idx.calibration
    assert cal is not None and cal["param"] == tuned and cal["value"] == idx.params[tuned] and cal["recall"] >= 0.95


def fused(n: int, sample_seed: int | None = None, w: float | None = None) -> np.ndarray:
    """Two arms of unit vectors side by side (as fused modes index them); queries weighted ``w : 1 - w``."""
    a = mixture(n, 16, seed=1, sample_seed=sample_seed)
    b = mixture(n, 24, seed=2, centres=12, sample_seed=None if sample_seed is None else sample_seed + 1)
    return np.hstack([a, b]) if w is None else np.hstack([w * a, (1 - w) * b]).astype(np.float32)


@pytest.mark.parametrize("kind", ["exact", "ivf", "hnsw"])
def test_maximum_inner_product_with_weighted_fused_queries(kind: str) -> None:
    """Index over two concatenated unit arms, queries weighted per arm (not unit): inner product, not cosine."""
    x, q = fused(N), fused(300, sample_seed=7, w=0.8)
    want_pos, want_scores = brute_force(x, q, 5)
    idx = build_index(x, kind, seed=0, calibration_queries=fused(300, sample_seed=20, w=0.8))
    pos, scores = idx.search(q, 5)
    np.testing.assert_allclose(scores, np.einsum("md,mkd->mk", q, x[pos]), rtol=1e-4, atol=1e-5)
    if kind == "exact":
        np.testing.assert_array_equal(pos, want_pos)
    else:
        assert recall_at_k(pos, want_pos) >= 0.9
        assert (scores <= want_scores + 1e-5).all()  # never better than the true k-th best
    if kind == "ivf":  # skewed weights need more cells than the rows themselves (1 : 1) do
        plain = build_index(x, kind, seed=0)
        assert idx.params["nprobe"] > plain.params["nprobe"]
        assert idx.calibration is not None and idx.calibration["queries"] == "given"
    big_pos, big_scores = idx.search(10.0 * q, 5)  # a query's norm scales its scores, not its ranking
    np.testing.assert_allclose(big_scores, 10.0 * scores, rtol=1e-4)
    assert recall_at_k(big_pos, pos) >= 0.99


def test_cache_recalibrates_for_other_queries_without_rebuilding(tmp_path: Path) -> None:
    x, cal = fused(N), fused(300, sample_seed=20, w=0.8)
    cache = IndexCache(tmp_path)
    idx, status = cache.get("fused", x, "ivf", "fp")
    assert status == "built: no saved index"
    plain = idx.params["nprobe"]
    idx, status = cache.get("fused", x, "ivf", "fp", calibration_queries=cal)
    assert status.startswith(f"loaded; recalibrated with the given queries: nprobe {plain} -> ")
    weighted = idx.params["nprobe"]
    assert weighted > plain
    idx, status = cache.get("fused", x, "ivf", "fp", calibration_queries=cal)
    assert status == "loaded" and idx.params["nprobe"] == weighted  # the new calibration was saved
    assert cache.get("fused", x, "ivf", "fp")[1] == f"loaded; recalibrated with sample rows: nprobe {weighted} -> {plain}"
    assert cache.get("fused", x, "ivf", "fp", {"nprobe": 3}, calibration_queries=cal)[1].startswith("built: params")
    assert cache.get("fused", x, "ivf", "fp", {"nprobe": 3})[1] == "loaded"  # nprobe given: nothing to calibrate


@pytest.mark.parametrize("kind", ["exact", "ivf", "hnsw"])
def test_effort_scales_one_search_and_never_mutates_params(kind: str, data: tuple[np.ndarray, np.ndarray]) -> None:
    x, q = data
    given = {"ivf": {"nlist": 60, "nprobe": 2}, "hnsw": {"M": 8, "efConstruction": 20, "efSearch": 16}}.get(kind)
    idx = build_index(x, kind, params=given, seed=0)
    before = dict(idx.params)
    assert VectorIndex.effort_for(5) == VectorIndex.effort_for(10) == 1 and idx.effort_for(50) > 1
    deep_pos, deep_scores = idx.search(q, 50, effort=idx.effort_for(50))
    assert idx.params == before  # the index's own settings are untouched
    np.testing.assert_array_equal(idx.search(q, 50)[0], idx.search(q, 50, effort=1)[0])
    exact_pos, _ = brute_force(x, q, 50)
    if kind == "exact":
        np.testing.assert_array_equal(deep_pos, exact_pos)  # nothing to scale
        return
    tuned = "nprobe" if kind == "ivf" else "efSearch"
    # effort multiplies the tuned value for this call only: the same as a copy of the index set to it
    scaled = load_index(idx.save(Path(tempfile.mkdtemp()) / kind), x)
    scaled.params[tuned] = before[tuned] * idx.effort_for(50)
    np.testing.assert_array_equal(scaled.search(q, 50)[0], deep_pos)
    assert recall_at_k(deep_pos, exact_pos) > recall_at_k(idx.search(q, 50)[0], exact_pos)
    if kind == "ivf":  # capped at every cell: an exhaustive search
        assert recall_at_k(idx.search(q, 50, effort=1000)[0], exact_pos) > 0.9999  # float near-ties aside
    assert idx.params == before
    with pytest.raises(ConfigError, match="effort"):
        idx.search(q, 5, effort=0)


def test_short_ivf_results_are_completed(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, q = data
    idx = IVFIndex.build(x, {"nlist": 60, "nprobe": 1})  # ~50 vectors per cell, k = 400 needs many cells
    pos, _ = idx.search(q[:20], 400)
    assert (pos >= 0).all() and all(len(set(row)) == 400 for row in pos.tolist())
    exact_pos, _ = ExactIndex(x).search(q[:20], 400)
    assert recall_at_k(pos, exact_pos) >= 0.999  # the short rows were searched over every cell


def test_ivf_sq8_lists_give_the_flat_lists_results_in_a_quarter_of_the_memory(
        data: tuple[np.ndarray, np.ndarray]) -> None:
    """codes="sq8" (the default) against codes="flat" at the same cells and nprobe: the same results (its
    2k + 10 candidates by their codes, re-scored exactly), scores equal to the inner products themselves, a
    quarter of the lists' bytes."""
    x, q = data
    p = {"nlist": 60, "nprobe": 3}
    sq8, flat = IVFIndex.build(x, {**p, "codes": "sq8"}), IVFIndex.build(x, {**p, "codes": "flat"})
    for k in (1, 5, 40):
        (ps, ss), (pf, sf) = sq8.search(q, k), flat.search(q, k)
        assert (ps != pf).mean() < 0.001  # float32 vs 8-bit candidates: the same lists but for near ties
        np.testing.assert_allclose(ss, np.einsum("md,mkd->mk", q, x[ps]), rtol=1e-6, atol=1e-6)  # exact
        np.testing.assert_allclose(sf, np.einsum("md,mkd->mk", q, x[pf]), rtol=1e-6, atol=1e-6)
    lists = {i: i.nbytes - 60 * 4 * D for i in (sq8, flat)}  # centroids aside
    assert lists[flat] == N * (4 * D + 8) and lists[sq8] == N * (D + 8) + 2 * 4 * D
    with pytest.raises(ConfigError, match="codes must be one of sq8, flat"):
        IVFIndex.build(x, {"codes": "pq"})


def test_an_ivf_index_saved_before_codes_loads_as_flat(tmp_path: Path, data: tuple[np.ndarray, np.ndarray]) -> None:
    x, q = data
    flat = IVFIndex.build(x, {"nlist": 60, "nprobe": 3, "codes": "flat"})
    flat.save(tmp_path / "old")
    meta = json.loads((tmp_path / "old" / "meta.json").read_text())
    del meta["params"]["codes"]  # as prodrec <= 0.3 wrote it
    (tmp_path / "old" / "meta.json").write_text(json.dumps(meta))
    back = load_index(tmp_path / "old")  # no rows needed: float32 lists
    assert back.params["codes"] == "flat"
    np.testing.assert_array_equal(back.search(q, 5)[0], flat.search(q, 5)[0])


def test_hnsw_k_above_ef_search(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, q = data
    idx = HNSWIndex.build(x, {"M": 8, "efConstruction": 20, "efSearch": 4})
    pos, _ = idx.search(q[:10], 50)
    assert (pos >= 0).all() and all(len(set(row)) == 50 for row in pos.tolist())


@pytest.mark.parametrize("kind", ["exact", "ivf", "hnsw"])
def test_save_load_round_trip(kind: str, tmp_path: Path, data: tuple[np.ndarray, np.ndarray],
                              built: dict[str, VectorIndex]) -> None:
    x, q = data
    idx = built[kind]
    idx.save(tmp_path / kind)
    meta = json.loads((tmp_path / kind / "meta.json").read_text())
    assert meta["kind"] == kind and (meta["n"], meta["dim"]) == (N, D) and meta["params"] == idx.params
    back = load_index(tmp_path / kind, x)
    assert type(back) is type(idx) and back.params == idx.params and (back.ntotal, back.dim) == (N, D)
    for a, b in zip(idx.search(q, 5), back.search(q, 5)):
        np.testing.assert_array_equal(a, b)
    assert type(idx).load(tmp_path / kind, x).kind == kind
    if kind == "ivf":  # 8-bit codes: the exact scores need the rows, and only the rows it was built over
        with pytest.raises(RankingError, match=r"load_index\(folder, vectors=rows\)"):
            load_index(tmp_path / kind).search(q, 5)
        with pytest.raises(ConfigError, match=f"built over {N} x {D} rows"):
            load_index(tmp_path / kind, x[:-1])
    else:  # the vectors are in the index itself
        for a, b in zip(idx.search(q, 5), load_index(tmp_path / kind).search(q, 5)):
            np.testing.assert_array_equal(a, b)
    other = IVFIndex if kind != "ivf" else HNSWIndex
    with pytest.raises(ConfigError, match=f"holds a {kind} index"):
        other.load(tmp_path / kind)
    assert not list((tmp_path / kind).glob(".*tmp"))  # no temporary files left


def test_cache_loads_on_match_and_rebuilds_on_change(tmp_path: Path, data: tuple[np.ndarray, np.ndarray]) -> None:
    x, q = data
    cache = IndexCache(tmp_path / "indexes")
    p = {"M": 16, "efConstruction": 40}
    first, status = cache.get("fused", x, "hnsw", "fp-1", p)
    assert status == "built: no saved index"
    meta = json.loads((tmp_path / "indexes" / "fused" / "meta.json").read_text())
    for key in ("kind", "params", "fingerprint", "n", "dim", "build_seconds", "faiss_version", "created_at"):
        assert meta.get(key) is not None, key
    again, status = cache.get("fused", x, "hnsw", "fp-1", p)
    assert status == "loaded" and again is not first
    np.testing.assert_array_equal(again.search(q, 5)[0], first.search(q, 5)[0])
    assert cache.get("fused", x, "hnsw", "fp-2", p)[1].startswith("built: fingerprint changed")
    assert cache.get("fused", x, "hnsw", "fp-2", {**p, "M": 8})[1] == "built: params changed (M: 16 -> 8)"
    assert cache.get("fused", x[:2500], "hnsw", "fp-2", {**p, "M": 8})[1].startswith("built: shape changed")
    assert cache.get("fused", x[:2500], "ivf", "fp-2")[1] == "built: kind changed (hnsw -> ivf)"
    assert cache.get("fused", x[:2500], "ivf", "fp-2")[1] == "loaded"
    assert cache.get("fused", x[:2500], "ivf", "fp-2", seed=1)[1].startswith("built: seed changed")
    assert cache.get("fused", x[500:3000], "ivf", "fp-2", seed=1)[1] == (
        "built: the vectors changed under the same fingerprint")
    (tmp_path / "indexes" / "fused" / "index.faiss").write_bytes(b"damaged")
    status = cache.get("fused", x[500:3000], "ivf", "fp-2", seed=1)[1]
    assert status.startswith("built: the saved index could not be read")
    assert cache.get("fused", x[500:3000], "ivf", "fp-2", seed=1)[1] == "loaded"
    assert cache.names() == ["fused"]
    assert sorted(p.name for p in (tmp_path / "indexes").iterdir()) == [".fused.lock", "fused"]  # no temp folders


def test_cache_removes_only_its_own_leftovers(tmp_path: Path, data: tuple[np.ndarray, np.ndarray]) -> None:
    x, _ = data
    (tmp_path / ".a.tmp-0123456789ab").mkdir(parents=True)  # a crashed build of "a"
    (tmp_path / ".a.b.tmp-0123456789ab").mkdir()  # another index's ("a.b") build in progress
    assert IndexCache(tmp_path).get("a", x, "ivf", "fp", {"nprobe": 2})[1] == "built: no saved index"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".a.b.tmp-0123456789ab", ".a.lock", "a"]


def test_cache_exact_and_auto(tmp_path: Path, data: tuple[np.ndarray, np.ndarray]) -> None:
    x, _ = data
    cache = IndexCache(tmp_path)
    idx, status = cache.get("small", x, "auto", "fp")
    assert isinstance(idx, ExactIndex) and status.startswith("built: exact") and cache.names() == []
    with pytest.raises(ConfigError, match="index name"):
        cache.get("../escape", x, "ivf", "fp")
    with pytest.raises(ConfigError, match="fingerprint"):
        cache.get("ok", x, "ivf", "")


def test_auto_kind() -> None:
    assert len(INDEX_KINDS) == 4 and "auto" in INDEX_KINDS
    assert resolve_kind("auto", AUTO_EXACT_MAX - 1) == "exact"
    assert resolve_kind("auto", AUTO_EXACT_MAX) == AUTO_APPROX_KIND != "exact"
    assert resolve_kind("ivf", 10) == "ivf"
    x = mixture(200, 8, seed=0, centres=4)
    assert isinstance(build_index(x, "auto", params={"M": 8}), ExactIndex)  # params of the other kinds: ignored
    with pytest.raises(ConfigError, match="valid"):
        build_index(x, "auto", params={"bogus": 1})


def test_errors(data: tuple[np.ndarray, np.ndarray], built: dict[str, VectorIndex]) -> None:
    x, q = data
    with pytest.raises(ConfigError, match="exact, ivf, hnsw, auto"):
        build_index(x, "annoy")
    with pytest.raises(ConfigError, match="valid: M, efConstruction, efSearch, target_recall"):
        build_index(x, "hnsw", params={"m": 16})
    with pytest.raises(ConfigError, match="nlist must be a positive integer"):
        build_index(x, "ivf", params={"nlist": 0})
    with pytest.raises(ConfigError, match="nlist=5000"):
        build_index(x, "ivf", params={"nlist": 5000})
    with pytest.raises(ConfigError, match="target_recall"):
        build_index(x, "hnsw", params={"target_recall": 1.5})
    bad = x.copy()
    bad[[3, 17]] = np.nan
    bad[40, 2] = np.inf
    with pytest.raises(RankingError, match=r"3 row\(s\) of the vectors contain NaN or inf, e.g. rows \[3, 17, 40\]"):
        build_index(bad, "hnsw")
    with pytest.raises(RankingError, match="2-d"):
        build_index(x[0], "exact")
    for idx in built.values():
        with pytest.raises(ConfigError, match=f"only {N} vectors"):
            idx.search(q, N + 1)
        with pytest.raises(ConfigError, match="at least 1"):
            idx.search(q, 0)
        with pytest.raises(RankingError, match="NaN"):
            idx.search(np.full((2, D), np.nan, dtype=np.float32), 5)
        with pytest.raises(RankingError, match=f"\\[m, {D}\\]"):
            idx.search(q[:, :10], 5)
        assert idx.search(q[:0], 3)[0].shape == (0, 3)
    assert built["exact"].search(q[:2], N)[0].shape == (2, N)  # k = ntotal is allowed


def test_recall_at_k() -> None:
    exact = np.array([[0, 1, 2], [3, 4, 5]])
    assert recall_at_k(exact, exact) == 1.0
    assert recall_at_k(np.array([[2, 1, 9], [-1, -1, -1]]), exact) == pytest.approx(2 / 6)
    assert recall_at_k(np.array([[0, 1, 2, 7], [5, 4, 3, 7]]), exact) == 1.0  # extra columns are ignored
    with pytest.raises(ConfigError):
        recall_at_k(exact[:, :2], exact)


def test_faiss_imported_lazily_and_missing_faiss_named(monkeypatch: pytest.MonkeyPatch) -> None:
    code = ("import sys, numpy as np; import prodrec, prodrec.rank.index as ix; "
            "ix.build_index(np.eye(4, dtype=np.float32), 'exact').search(np.eye(4, dtype=np.float32), 2); "
            "print('faiss' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` now fails as if it were not installed
    with pytest.raises(MissingDependency, match="pip install faiss-cpu"):
        build_index(mixture(100, 8, seed=0, centres=4), "ivf")


def test_side_by_side_is_the_concatenation_read_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Arrays side by side read as their concatenation: rows, the whole, exact search in chunks (ties by
    smaller position, against a full sort), an exact index, an IVF index identical to one built on the
    concatenated copy; mismatched parts are refused."""
    from prodrec.rank.index import base
    from prodrec.rank.index.base import SideBySide, exact_search

    a, b = mixture(2500, 24, seed=3), mixture(2500, 8, seed=4)
    a[7], a[11] = a[3], a[3]  # ties
    b[7], b[11] = b[3], b[3]
    whole = np.hstack([a, b])
    x = SideBySide([a, b])
    assert x.shape == whole.shape and len(x) == 2500 and x.nbytes == whole.nbytes
    assert np.array_equal(x[5:9], whole[5:9]) and np.array_equal(x[np.array([9, 2])], whole[[9, 2]])
    assert np.array_equal(np.asarray(x), whole)
    q = whole[[3, 100, 2000]]
    monkeypatch.setattr(base, "SIDE_BY_SIDE_BYTES", 4 * (32 + 6) * 300)  # 300 rows a chunk: merged across chunks
    pos, val = exact_search(x, q, 6)
    ref_pos, ref_val = brute_force(whole, q, 6)
    assert np.array_equal(pos, ref_pos) and np.allclose(val, ref_val, atol=1e-6)
    assert pos[0, :3].tolist() == [3, 7, 11]
    exact = build_index(x, "exact")
    assert np.array_equal(exact.search(q, 6)[0], ref_pos)
    p = {"nlist": 16}
    side, copy = build_index(x, "ivf", params=p, seed=0), build_index(whole, "ivf", params=p, seed=0)
    assert side.params == copy.params and side.calibration == copy.calibration
    assert np.array_equal(side.search(q, 6, effort=2)[0], copy.search(q, 6, effort=2)[0])
    with pytest.raises(RankingError, match="as many rows"):
        SideBySide([a, b[:10]])


def test_fused_ivf_build_holds_no_concatenated_copy() -> None:
    """ArmIndexes.fused builds its IVF index from the arms side by side: the build's numpy memory stays well
    below one concatenated copy of the arms (which it used to make)."""
    import tracemalloc

    from prodrec.rank.index.arm_indexes import ArmIndexes
    from prodrec.rank.index.base import CHUNK_ROWS

    n = 4 * CHUNK_ROWS
    arms = {"image": mixture(n, 32, seed=5, centres=8), "text": mixture(n, 16, seed=6, centres=8)}
    concatenated = sum(v.nbytes for v in arms.values())
    indexes = ArmIndexes("ivf", arms, np.arange(n).astype(str), {"image": "a", "text": "b"},
                         params={"nlist": 32, "train_size": 2000})
    tracemalloc.start()
    try:
        index = indexes.fused(lambda rows: np.hstack([arms["image"][rows], arms["text"][rows]]))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert index.ntotal == n and index.dim == 48
    assert peak < 0.5 * concatenated, (peak, concatenated)
