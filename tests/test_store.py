"""Embedding store: reuse, invalidation with reasons, checksums, resume, locking (issue 6, cases 11-14)."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import prodrec
from prodrec.store import EmbeddingStore, fingerprint

IDS = np.arange(100, 137)


def vectors(start: int, stop: int) -> tuple[np.ndarray, dict[int, str]]:
    rng = np.random.default_rng(start)
    return rng.normal(size=(stop - start, 8)).astype(np.float32), ({0: "broken"} if start == 8 else {})


def compute_counting(calls: list[tuple[int, int]]):
    def f(a: int, b: int):
        calls.append((a, b))
        return vectors(a, b)
    return f


def test_compute_then_hit(store_dir: Path) -> None:
    st, calls = EmbeddingStore(store_dir), []
    e1 = st.get_or_compute("image", "m/1", "fp", IDS, 8, compute_counting(calls), meta={"weight_source": "w"},
                           chunk_size=8, progress=False)
    assert e1.meta["cache"] == "miss" and len(calls) == 5
    assert e1.failures == {"108": "broken"} and len(e1.valid()) == len(IDS) - 1
    side = json.loads(next(store_dir.glob("*.json")).read_text())
    for key in ("model_id", "weight_source", "dim", "fingerprint", "created_at", "package_version", "sha256"):
        assert key in side
    e2 = st.get_or_compute("image", "m/1", "fp", IDS, 8, compute_counting(calls), chunk_size=8, progress=False)
    assert e2.meta["cache"] == "hit" and len(calls) == 5
    np.testing.assert_array_equal(e1.vectors, e2.vectors)
    assert not list(store_dir.glob("*.parts"))


@pytest.mark.parametrize("what", ["model", "catalog", "version"])
def test_mismatch_recomputes_and_says_why(store_dir: Path, what: str, monkeypatch: pytest.MonkeyPatch,
                                          caplog: pytest.LogCaptureFixture) -> None:
    st = EmbeddingStore(store_dir)
    st.get_or_compute("text", "m/1", "fp1", IDS, 8, vectors, chunk_size=64, progress=False)
    caplog.set_level("INFO")
    if what == "model":
        _, why = st.check("text", "m/2", "fp1")
        assert why == "no stored embeddings for this model and catalog"
    elif what == "catalog":
        _, why = st.check("text", "m/1", "fp2")
        assert "only for another catalog" in why
        e = st.get_or_compute("text", "m/1", "fp2", IDS, 8, vectors, chunk_size=64, progress=False)
        assert e.meta["cache"] == "miss" and "another catalog" in e.meta["computed_because"]
    else:
        monkeypatch.setattr("prodrec.store.__version__", "9.9.9")
        e = st.get_or_compute("text", "m/1", "fp1", IDS, 8, vectors, chunk_size=64, progress=False)
        assert e.meta["cache"] == "miss" and "written by prodrec" in e.meta["computed_because"]
        assert "computing, because written by prodrec" in caplog.text


@pytest.mark.parametrize("damage", ["truncate", "edit", "sidecar"])
def test_damaged_files_detected_and_recomputed(store_dir: Path, damage: str) -> None:
    st = EmbeddingStore(store_dir)
    good = st.get_or_compute("image", "m", "fp", IDS, 8, vectors, chunk_size=16, progress=False)
    npy, side = next(store_dir.glob("*.npy")), next(store_dir.glob("*.json"))
    if damage == "truncate":
        npy.write_bytes(npy.read_bytes()[:300])
    elif damage == "edit":
        arr = np.load(npy)
        arr[3, 3] += 1
        np.save(npy, arr)
    else:
        side.write_text("{not json")
    emb, why = st.check("image", "m", "fp")
    assert emb is None and ("checksum" in why or "unreadable" in why)
    again = st.get_or_compute("image", "m", "fp", IDS, 8, vectors, chunk_size=16, progress=False)
    assert again.meta["cache"] == "miss"
    np.testing.assert_array_equal(again.vectors, good.vectors)


def test_interrupted_run_resumes_to_the_same_result(store_dir: Path, tmp_path: Path) -> None:
    ref = EmbeddingStore(tmp_path / "ref").get_or_compute("image", "m", "fp", IDS, 8, vectors, chunk_size=8,
                                                          progress=False)
    st, calls = EmbeddingStore(store_dir), []

    def dies_at_third(a: int, b: int):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append((a, b))
        return vectors(a, b)

    with pytest.raises(KeyboardInterrupt):
        st.get_or_compute("image", "m", "fp", IDS, 8, dies_at_third, chunk_size=8, progress=False)
    assert not list(store_dir.glob("*.npy"))  # nothing final was written
    assert len(list(store_dir.glob("*.parts/chunk-*.npz"))) == 2
    calls2: list = []
    out = st.get_or_compute("image", "m", "fp", IDS, 8, compute_counting(calls2), chunk_size=8, progress=False)
    assert calls2 == [(16, 24), (24, 32), (32, 37)] and out.meta["cache"] == "resumed"
    np.testing.assert_array_equal(out.vectors, ref.vectors)
    assert out.failures == ref.failures


def test_damaged_chunk_recomputed_and_other_settings_discarded(store_dir: Path) -> None:
    st = EmbeddingStore(store_dir)
    key = st.key("image", "m", "fp")
    parts = store_dir / f"{key}.parts"

    def stop_after_two(a, b, n=[0]):
        n[0] += 1
        if n[0] > 2:
            raise KeyboardInterrupt
        return vectors(a, b)

    with pytest.raises(KeyboardInterrupt):
        st.get_or_compute("image", "m", "fp", IDS, 8, stop_after_two, chunk_size=8, progress=False)
    (parts / "chunk-000001.npz").write_bytes(b"garbage")
    calls: list = []
    st.get_or_compute("image", "m", "fp", IDS, 8, compute_counting(calls), chunk_size=8, progress=False)
    assert calls[0] == (8, 16)  # the damaged chunk is redone, the good one kept
    # partial chunks of a run with other settings (chunk size) are discarded, not mixed in
    with pytest.raises(KeyboardInterrupt):
        st.get_or_compute("image", "m", "fp", IDS, 8, lambda a, b: (_ for _ in ()).throw(KeyboardInterrupt)
                          if a >= 16 else vectors(a, b), chunk_size=8, progress=False, force=True)
    assert len(list(parts.glob("chunk-*.npz"))) == 2
    calls = []
    st.get_or_compute("image", "m", "fp", IDS, 8, compute_counting(calls), chunk_size=4, progress=False, force=True)
    assert calls[0] == (0, 4) and len(calls) == 10


def _writer(root: str, seed: int, q: "mp.Queue[str]") -> None:
    st = EmbeddingStore(root)

    def slow(a: int, b: int):
        time.sleep(0.05)
        return np.full((b - a, 8), float(seed), dtype=np.float32), {}

    e = st.get_or_compute("image", "m", "fp", IDS, 8, slow, chunk_size=4, progress=False, force=True)
    q.put(f"{seed}:{e.vectors[0, 0]}")


def test_two_runs_on_one_store_never_mix(store_dir: Path) -> None:
    EmbeddingStore(store_dir)
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(str(store_dir), s, q)) for s in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    emb, why = EmbeddingStore(store_dir).check("image", "m", "fp")
    assert emb is not None, why
    assert len(np.unique(emb.vectors)) == 1  # all rows from one writer: never a mixed file


def test_fingerprint_and_unwritable_store(tmp_path: Path) -> None:
    assert fingerprint(["a", "b"]) != fingerprint(["ab"]) and len(fingerprint([])) == 64
    (tmp_path / "file").write_text("x")
    with pytest.raises(PermissionError, match="cannot create the embedding store folder"):
        EmbeddingStore(tmp_path / "file" / "store")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root): permission bits are not enforced")
        with pytest.raises(PermissionError, match="not writable"):
            EmbeddingStore(ro)
    finally:
        ro.chmod(0o700)


@pytest.mark.slow
def test_kill_9_during_prodrec_embed_resumes(tmp_path: Path) -> None:
    """Really SIGKILL `prodrec embed` mid-run; the next run resumes and equals an uninterrupted run."""
    from prodrec.demo import write_demo_catalog

    data = write_demo_catalog(tmp_path / "cat", n=160, seed=3, image_size=64, progress=False)
    base = [sys.executable, "-m", "prodrec.cli", "embed", "--data", str(data), "--image-model",
            "efficientnet-lite0", "--text-model", "none", "--batch-size", "8", "--chunk-size", "16", "--quiet"]
    env = dict(os.environ, PRODREC_SLOW_CHUNKS="0.4")  # test hook: sleep after each chunk, see store.py
    store = tmp_path / "store"
    proc = subprocess.Popen(base + ["--store", str(store)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(store.glob("*.parts/chunk-*.npz"))) < 3:
        time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    n_done = len(list(store.glob("*.parts/chunk-*.npz")))
    assert 3 <= n_done < 10 and not list(store.glob("*.npy"))
    done = subprocess.run(base + ["--store", str(store), "--json"], capture_output=True, text=True, check=True)
    info = json.loads(done.stdout)["models"]["image"]
    assert info["cache"] == "resumed"
    ref = subprocess.run(base + ["--store", str(tmp_path / "ref")], capture_output=True, text=True, check=True)
    assert ref.returncode == 0
    a, b = (np.load(next((tmp_path / d).glob("*.npy"))) for d in ("store", "ref"))
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert prodrec.__version__
