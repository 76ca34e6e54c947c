"""Per-product embedding store: reuse by (id, key), resume after kill -9, checksums, repairs, locking."""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

import prodrec
import prodrec.embed.store
import prodrec.embed.store.digests
import prodrec.embed.store.facade
from prodrec.core.errors import ConfigError, StoreError
from prodrec.core.io import fingerprint
from prodrec.embed.store import EmbeddingStore
from prodrec.embed.vectors import text_key

DIM = 8
IDS = [str(i) for i in range(100, 137)]  # 37 products
KEYS = [f"key-{i}" for i in IDS]
SRC = str(Path(prodrec.__file__).resolve().parents[1])  # the source tree under test, for the subprocesses


def vectors_of(pairs: Sequence[tuple[str, str]]) -> np.ndarray:
    """Deterministic vectors of (id, key) pairs, the same in every process (the subprocesses get this source)."""
    seeds = [int(hashlib.sha256(f"{i}|{k}".encode()).hexdigest()[:8], 16) for i, k in pairs]
    return np.stack([np.random.default_rng(s).normal(size=DIM) for s in seeds]).astype(np.float32)


class Model:
    """A deterministic 'model' that records which positions it was asked to embed."""

    def __init__(self, ids: Sequence[str], keys: Sequence[str], broken: Sequence[str] = ()) -> None:
        self.ids, self.keys, self.broken = list(ids), list(keys), set(broken)
        self.calls: list[list[int]] = []

    def __call__(self, positions: np.ndarray) -> tuple[np.ndarray, dict[int, str]]:
        self.calls.append(positions.tolist())
        pairs = [(self.ids[p], self.keys[p]) for p in positions]
        return vectors_of(pairs), {j: "cannot decode" for j, (i, _) in enumerate(pairs) if i in self.broken}

    @property
    def computed(self) -> list[str]:
        return sorted(self.ids[p] for call in self.calls for p in call)


def never(positions: np.ndarray) -> tuple[np.ndarray, dict[int, str]]:
    raise AssertionError(f"compute was called for {positions.tolist()}")


def embed(store: EmbeddingStore, ids: Sequence[str] = IDS, keys: Sequence[str] = KEYS, compute=None, **kw):
    compute = compute or Model(ids, keys)
    return store.embed("image", "test/model", DIM, ids, keys, compute, chunk_size=kw.pop("chunk_size", 8),
                       progress=kw.pop("progress", False), **kw)


def model_folder(root: Path) -> Path:
    (folder,) = (root / "image").iterdir()
    return folder


def shard_files(root: Path) -> list[str]:
    return sorted(p.name for p in model_folder(root).glob("shard-*.npy"))


def expected(ids: Sequence[str] = IDS, keys: Sequence[str] = KEYS) -> np.ndarray:
    return vectors_of(list(zip(ids, keys)))


# A subprocess that embeds ids "0".."n-1" into a store; it ships this file's vectors_of.
WORKER = textwrap.dedent("""
    import hashlib, json, os, sys, time
    from collections.abc import Sequence
    from pathlib import Path
    import numpy as np
    from prodrec.embed.store import EmbeddingStore
    DIM = {dim}
""").format(dim=DIM) + inspect.getsource(vectors_of) + textwrap.dedent("""
    root, n, chunk, go, digest = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
    ids = [str(i) for i in range(n)]
    keys = ["k" + i for i in ids]
    if go:  # start together with the other worker
        Path(f"{go}.{os.getpid()}.ready").touch()
        while not os.path.exists(go):
            time.sleep(0.005)
    store = EmbeddingStore(root)
    compute = lambda pos: (vectors_of([(ids[p], keys[p]) for p in pos]), {})
    e = store.embed("image", "m", DIM, ids, keys, compute, chunk_size=chunk, progress=False)
    if digest:
        store.file_digests([digest])
    print(json.dumps({"computed": e.meta["computed"], "sha": hashlib.sha256(e.vectors.tobytes()).hexdigest()}))
""")


def worker(root: Path, n: int, chunk: int, go: str = "", digest: str = "", slow: float = 0.0,
           **popen) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": SRC, "PRODREC_SLOW_CHUNKS": str(slow)}
    return subprocess.Popen([sys.executable, "-c", WORKER, str(root), str(n), str(chunk), go, digest], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def finished(proc: subprocess.Popen[str]) -> dict:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return json.loads(out)


# ---------------------------------------------------------------------- reuse
def test_miss_then_hit_without_calling_compute_or_meta(store_dir: Path) -> None:
    store, model = EmbeddingStore(store_dir), Model(IDS, KEYS, broken=["108"])
    first = embed(store, compute=model, meta=lambda: {"weight_source": "w", "device": "cpu"})
    assert first.meta["cache"] == "miss" and first.meta["computed"] == 37 and first.meta["loaded"] == 0
    assert [len(c) for c in model.calls] == [8, 8, 8, 8, 5] and model.computed == sorted(IDS)
    assert first.failures == {"108": "cannot decode"} and len(first.valid()) == 36
    assert not first.vectors[IDS.index("108")].any()
    ok = np.array([i != "108" for i in IDS])
    np.testing.assert_array_equal(first.vectors[ok], expected()[ok])

    def no_meta() -> dict:
        raise AssertionError("meta is built only when computing")

    again = embed(store, compute=never, meta=no_meta)
    assert again.meta["cache"] == "hit" and again.meta["loaded"] == 37 and again.meta["computed"] == 0
    assert again.meta["computed_because"] == "" and again.meta["repairs"] == []
    assert again.meta["weight_source"] == "w" and again.meta["model_id"] == "test/model"
    assert again.meta["store"] == str(store_dir) and again.meta["dim"] == DIM
    assert again.failures == first.failures and again.ids.tolist() == IDS
    np.testing.assert_array_equal(again.vectors, first.vectors)


def test_subsets_supersets_changed_keys_and_order(store_dir: Path) -> None:
    store = EmbeddingStore(store_dir)
    embed(store)
    ids = IDS[5:15] + ["n1", "n2", "n3"]
    keys = KEYS[5:15] + ["kn1", "kn2", "kn3"]
    model = Model(ids, keys)
    mixed = embed(store, ids, keys, compute=model)
    assert model.computed == ["n1", "n2", "n3"] and mixed.meta["cache"] == "partial"
    assert mixed.meta["loaded"] == 10 and mixed.meta["computed"] == 3
    np.testing.assert_array_equal(mixed.vectors, expected(ids, keys))

    changed = KEYS.copy()
    changed[20] = "new photo"
    model = Model(IDS, changed)
    after = embed(store, keys=changed, compute=model)
    assert model.computed == [IDS[20]] and "1 of 37 products" in after.meta["computed_because"]
    np.testing.assert_array_equal(after.vectors, expected(IDS, changed))

    order = np.random.default_rng(0).permutation(len(IDS))
    shuffled = embed(store, [IDS[i] for i in order], [KEYS[i] for i in order], compute=never)
    assert shuffled.ids.tolist() == [IDS[i] for i in order]
    np.testing.assert_array_equal(shuffled.vectors, expected()[order])


def test_ids_are_kept_exactly_as_given(store_dir: Path) -> None:
    store = EmbeddingStore(store_dir)
    ids, keys = ["007", "7", "7.0"], ["same", "same", "same"]
    first = embed(store, ids, keys)
    np.testing.assert_array_equal(first.vectors, expected(ids, keys))
    assert len({tuple(v) for v in first.vectors}) == 3
    again = embed(store, ["7", "007"], ["same", "same"], compute=never)
    assert again.ids.tolist() == ["7", "007"]
    with sqlite3.connect(model_folder(store_dir) / "index.sqlite") as conn:
        stored = conn.execute("SELECT id, typeof(id) FROM items ORDER BY id").fetchall()
    assert stored == [("007", "text"), ("7", "text"), ("7.0", "text")]


def test_stored_failures_are_retried_only_when_the_input_changes(store_dir: Path) -> None:
    store = EmbeddingStore(store_dir)
    embed(store, compute=Model(IDS, KEYS, broken=["101", "102"]))
    again = embed(store, compute=never)
    assert again.failures == {"101": "cannot decode", "102": "cannot decode"} and again.meta["cache"] == "hit"
    keys = KEYS.copy()
    keys[1] = "fixed file"
    model = Model(IDS, keys)
    fixed = embed(store, keys=keys, compute=model)
    assert model.computed == ["101"] and fixed.failures == {"102": "cannot decode"}
    np.testing.assert_array_equal(fixed.vectors[1], expected(IDS, keys)[1])


def test_force_recomputes_every_given_product_and_frees_replaced_shards(store_dir: Path) -> None:
    store = EmbeddingStore(store_dir)
    embed(store)
    model = Model(IDS, KEYS)
    forced = embed(store, compute=model, force=True, chunk_size=37)
    assert model.computed == sorted(IDS) and forced.meta["cache"] == "miss"
    assert forced.meta["computed_because"] == "recompute forced"
    assert shard_files(store_dir) == ["shard-000006.npy"]  # the five replaced shards are deleted
    np.testing.assert_array_equal(embed(store, compute=never).vectors, expected())


def test_arms_and_models_never_mix(store_dir: Path) -> None:
    store = EmbeddingStore(store_dir)
    for model_id in ("a/b", "a-b"):  # same readable slug, different models
        model = Model(IDS, KEYS)
        store.embed("image", model_id, DIM, IDS, KEYS, model, progress=False)
        assert model.computed == sorted(IDS)
    model = Model(IDS, KEYS)
    store.embed("text", "a/b", DIM, IDS, KEYS, model, progress=False)
    assert model.computed == sorted(IDS)
    assert len(list(store_dir.glob("*/*/index.sqlite"))) == 3


# ---------------------------------------------------------------------- interruption
def test_exception_mid_run_keeps_finished_chunks(store_dir: Path, tmp_path: Path) -> None:
    store, model = EmbeddingStore(store_dir), Model(IDS, KEYS)

    def interrupted_at_third_chunk(positions: np.ndarray):
        if len(model.calls) == 2:
            raise KeyboardInterrupt
        return model(positions)

    with pytest.raises(KeyboardInterrupt):
        embed(store, compute=interrupted_at_third_chunk)
    found, _, _ = store.lookup("image", "test/model", IDS, KEYS)
    assert found.sum() == 16
    rerun = Model(IDS, KEYS)
    resumed = embed(store, compute=rerun)
    assert rerun.computed == sorted(IDS[16:]) and resumed.meta["cache"] == "partial"
    assert resumed.meta["loaded"] == 16
    reference = embed(EmbeddingStore(tmp_path / "ref"))
    np.testing.assert_array_equal(resumed.vectors, reference.vectors)


def test_kill_9_mid_run_resumes_to_the_uninterrupted_result(store_dir: Path, tmp_path: Path) -> None:
    n, chunk = 60, 6
    ids, keys = [str(i) for i in range(n)], [f"k{i}" for i in range(n)]
    store = EmbeddingStore(store_dir)
    proc = worker(store_dir, n, chunk, slow=0.2)
    deadline = time.monotonic() + 30
    while store.lookup("image", "m", ids, keys)[0].sum() < chunk:
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "no chunk was committed in 30 s"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    found, _, _ = store.lookup("image", "m", ids, keys)
    assert chunk <= found.sum() < n

    model = Model(ids, keys)
    resumed = store.embed("image", "m", DIM, ids, keys, model, chunk_size=chunk, progress=False)
    assert sorted(p for call in model.calls for p in call) == np.flatnonzero(~found).tolist()
    assert resumed.meta["loaded"] == found.sum() and resumed.meta["cache"] == "partial"
    fresh = EmbeddingStore(tmp_path / "fresh").embed("image", "m", DIM, ids, keys, Model(ids, keys),
                                                     chunk_size=chunk, progress=False)
    np.testing.assert_array_equal(resumed.vectors, fresh.vectors)
    (entry,) = store.entries()
    assert entry["products"] == n and entry["shards"] == len(list(store_dir.glob("image/*/shard-*.npy")))


def test_unindexed_shard_files_are_harmless_and_cleaned_up(store_dir: Path) -> None:
    store = EmbeddingStore(store_dir)
    embed(store, IDS[:8], KEYS[:8])  # shard-000001
    folder = model_folder(store_dir)
    # what a run killed between writing a shard and indexing it leaves behind
    np.save(folder / "shard-000002.npy", np.ones((8, DIM), np.float32))
    np.save(folder / "shard-000077.npy", np.ones((8, DIM), np.float32))
    (folder / ".shard-000003.npy.x1y2.tmp").write_bytes(b"half a shard")
    model = Model(IDS, KEYS)
    out = embed(store, compute=model)
    assert model.computed == sorted(IDS[8:])
    np.testing.assert_array_equal(out.vectors, expected())
    assert shard_files(store_dir) == [f"shard-00000{i}.npy" for i in range(1, 6)]  # 1 + 4 new chunks
    assert not list(folder.glob(".shard-*"))


# ---------------------------------------------------------------------- damage
@pytest.mark.parametrize("damage", ["missing", "truncated", "edited", "edited_in_the_same_mtime_tick", "wrong_shape"])
def test_damaged_shard_is_dropped_and_its_products_recomputed(
    store_dir: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = EmbeddingStore(store_dir)
    embed(store)
    folder = model_folder(store_dir)
    shard = folder / "shard-000002.npy"  # products 8..15
    if damage == "missing":
        shard.unlink()
    elif damage == "truncated":
        shard.write_bytes(shard.read_bytes()[:200])
    elif damage.startswith("edited"):
        embed(store, compute=never)  # reads (and verifies) every shard
        mtime = shard.stat().st_mtime_ns
        vectors = np.load(shard)
        vectors[3, 3] += 1
        np.save(shard, vectors)
        if damage == "edited_in_the_same_mtime_tick":  # same size and mtime: only reading the bytes tells
            os.utime(shard, ns=(mtime, mtime))
    else:
        np.save(shard, np.zeros((8, DIM + 1), np.float32))
        with sqlite3.connect(folder / "index.sqlite") as conn:
            sha = hashlib.sha256(shard.read_bytes()).hexdigest()
            conn.execute("UPDATE shards SET sha256 = ? WHERE shard = 2", (sha,))
    untouched = embed(store, IDS[16:], KEYS[16:], compute=never)  # only shards that are read are checked
    assert untouched.meta["repairs"] == []
    model = Model(IDS, KEYS)
    with caplog.at_level(logging.WARNING, logger="prodrec.embed.store"):
        repaired = embed(store, compute=model)
    reason = "missing" if damage == "missing" else "(8, 9)" if damage == "wrong_shape" else "checksum"
    assert model.computed == sorted(IDS[8:16]) and repaired.meta["cache"] == "partial"
    (note,) = repaired.meta["repairs"]
    assert note.startswith("shard-000002.npy") and reason in note and note in repaired.meta["computed_because"]
    assert "shard-000002.npy" in caplog.text
    np.testing.assert_array_equal(repaired.vectors, expected())
    assert "shard-000002.npy" not in shard_files(store_dir)
    assert embed(store, compute=never).meta["cache"] == "hit"


def _damage_index(path: Path, how: str) -> None:
    if how == "garbage":
        path.write_bytes(b"\x00not a database\xff" * 300)
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        statement = {
            "no_tables": "DROP TABLE items",
            "other_dim": "UPDATE meta SET value = '16' WHERE key = 'dim'",
            "other_version": "UPDATE meta SET value = '99' WHERE key = 'format_version'",
        }[how]
        with sqlite3.connect(path) as conn:
            conn.execute(statement)


@pytest.mark.parametrize(("how", "reason"), [
    ("garbage", "not a database"), ("empty", "lacks the table"), ("truncated", "malformed"),
    ("no_tables", "lacks the table items"), ("other_dim", "dim 16, not 8"),
    ("other_version", "format_version 99, not 1"),
])
def test_damaged_or_foreign_index_is_rebuilt(
    store_dir: Path, how: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = EmbeddingStore(store_dir)
    embed(store)
    index = model_folder(store_dir) / "index.sqlite"
    _damage_index(index, how)
    found, _, _ = store.lookup("image", "test/model", IDS, KEYS)
    assert not found.any()  # read-only: nothing usable, nothing repaired
    model = Model(IDS, KEYS)
    with caplog.at_level(logging.WARNING, logger="prodrec.embed.store"):
        rebuilt = embed(store, compute=model, chunk_size=37)
    assert model.computed == sorted(IDS) and rebuilt.meta["cache"] == "miss"
    assert reason in rebuilt.meta["computed_because"] and "index.sqlite" in rebuilt.meta["computed_because"]
    assert reason in caplog.text and rebuilt.meta["repairs"]
    np.testing.assert_array_equal(rebuilt.vectors, expected())
    assert index.with_name("index.sqlite.discarded").exists()
    assert shard_files(store_dir) == ["shard-000001.npy"]  # the old index's shards are deleted
    assert embed(store, compute=never).meta["cache"] == "hit"


def test_index_damage_off_the_read_path_is_found_by_the_next_writer(store_dir: Path) -> None:
    store = EmbeddingStore(store_dir)
    embed(store)
    index = model_folder(store_dir) / "index.sqlite"
    data = bytearray(index.read_bytes())
    data[-4096:] = b"\xff" * 4096  # the last page, which lookups do not read
    index.write_bytes(bytes(data))
    assert embed(store, compute=never).meta["cache"] == "hit"  # what reads fine is still used
    model = Model([*IDS, "new"], [*KEYS, "k"])
    rebuilt = embed(store, [*IDS, "new"], [*KEYS, "k"], compute=model)
    assert "damaged" in rebuilt.meta["computed_because"] and len(model.computed) == 38
    np.testing.assert_array_equal(rebuilt.vectors, expected([*IDS, "new"], [*KEYS, "k"]))


# ---------------------------------------------------------------------- file digests
def _old_file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    old = time.time_ns() - 60 * 10**9
    os.utime(path, ns=(old, old))
    return path


def test_file_digests_read_each_file_once(store_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = EmbeddingStore(store_dir)
    reads: list[str] = []
    real = prodrec.embed.store.digests.hash_file
    monkeypatch.setattr(prodrec.embed.store.digests, "hash_file", lambda name: reads.append(name) or real(name))
    files = [_old_file(tmp_path / f"img{i}.jpg", bytes([i]) * 5000) for i in range(40)]
    same = _old_file(tmp_path / "copy.jpg", bytes([0]) * 5000)
    (tmp_path / "folder.jpg").mkdir()
    paths = [*files, same, tmp_path / "absent.jpg", tmp_path / "folder.jpg"]
    digests = store.file_digests(paths, progress=True)
    assert digests[0] == hashlib.blake2b(bytes([0]) * 5000, digest_size=16).hexdigest() == digests[40]
    assert len(set(digests[:40])) == 40
    assert digests[41:] == ["missing:FileNotFoundError", "missing:not a regular file"]
    assert len(reads) == 41

    reads.clear()
    assert store.file_digests(paths) == digests and reads == []  # warm: stats only
    monkeypatch.chdir(tmp_path)
    assert store.file_digests(["img3.jpg"]) == [digests[3]] and reads == []  # relative path, same file

    _old_file(files[5], b"a new photo")  # another size and mtime
    changed = store.file_digests(paths)
    assert reads == [str(files[5])] and changed[5] != digests[5]
    assert changed[:5] + changed[6:] == digests[:5] + digests[6:]

    reads.clear()
    fresh = tmp_path / "just-written.jpg"
    fresh.write_bytes(b"x")
    store.file_digests([fresh])
    store.file_digests([fresh])
    assert reads == [str(fresh)] * 2  # not cached until its mtime has settled


def test_damaged_file_digest_cache_is_rebuilt(store_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    store = EmbeddingStore(store_dir)
    image = _old_file(tmp_path / "a.jpg", b"pixels")
    (digest,) = store.file_digests([image])
    (store_dir / "files.sqlite").write_bytes(b"garbage" * 1000)
    with caplog.at_level(logging.WARNING, logger="prodrec.embed.store"):
        assert store.file_digests([image]) == [digest]
    assert "files.sqlite" in caplog.text
    monkeypatch.setattr(prodrec.embed.store.digests, "hash_file", never)
    assert store.file_digests([image]) == [digest]  # the new cache works


# ---------------------------------------------------------------------- processes, permissions
def test_two_processes_compute_each_product_once(store_dir: Path, tmp_path: Path) -> None:
    go = str(tmp_path / "go")
    procs = [worker(store_dir, 37, 4, go=go, slow=0.05) for _ in range(2)]
    deadline = time.monotonic() + 30
    while len(list(tmp_path.glob("go.*.ready"))) < 2:
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.01)
    Path(go).touch()
    results = [finished(p) for p in procs]
    assert sorted(r["computed"] for r in results) == [0, 37]  # the second waited, then found all stored
    ids = [str(i) for i in range(37)]
    want = vectors_of([(i, "k" + i) for i in ids])
    assert {r["sha"] for r in results} == {hashlib.sha256(want.tobytes()).hexdigest()}


def test_full_hit_takes_no_lock(store_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = EmbeddingStore(store_dir)
    embed(store)

    def no_lock(*args, **kwargs):
        raise AssertionError("a full hit must not lock")

    monkeypatch.setattr(prodrec.embed.store.facade, "file_lock", no_lock)
    assert embed(store, compute=never).meta["cache"] == "hit"
    with pytest.raises(AssertionError, match="must not lock"):  # computing does lock
        embed(store, ["new"], ["k"])


def test_files_are_readable_by_everyone_under_umask_022(store_dir: Path, tmp_path: Path) -> None:
    image = _old_file(tmp_path / "a.jpg", b"pixels")
    finished(worker(store_dir, 20, 8, digest=str(image), preexec_fn=lambda: os.umask(0o022)))
    paths = list(store_dir.rglob("*"))
    assert {"files.sqlite", "index.sqlite", "shard-000001.npy", ".lock"} <= {p.name for p in paths}
    wrong = {p.name: oct(p.stat().st_mode & 0o777) for p in paths
             if p.stat().st_mode & 0o777 != (0o755 if p.is_dir() else 0o644)}
    assert wrong == {}


# ---------------------------------------------------------------------- interface
def test_progress_bar_starts_at_the_stored_count(store_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = EmbeddingStore(store_dir)
    embed(store, IDS[:30], KEYS[:30])
    assert capsys.readouterr().err == ""
    embed(store, progress=True, desc="image test")
    err = capsys.readouterr().err
    assert "image test" in err and "30/37" in err and "37/37" in err


def test_model_meta_is_stored_as_strict_json(store_dir: Path) -> None:
    store = EmbeddingStore(store_dir)
    out = embed(store, meta={"score": float("nan"), "n": np.int64(3), "path": Path("/w")})
    assert out.meta["score"] is None and out.meta["n"] == 3 and out.meta["path"] == "/w"

    def reject(constant: str):
        raise ValueError(f"non-standard JSON constant {constant}")

    with sqlite3.connect(model_folder(store_dir) / "index.sqlite") as conn:
        stored = {key: json.loads(value, parse_constant=reject)
                  for key, value in conn.execute("SELECT key, value FROM meta")}
    assert stored["model"] == {"score": None, "n": 3, "path": "/w"}
    assert stored["dim"] == DIM and stored["format_version"] == prodrec.embed.store.FORMAT_VERSION


def test_lookup_reads_without_computing_or_creating(store_dir: Path) -> None:
    store = EmbeddingStore(store_dir)
    found, vectors, failures = store.lookup("image", "test/model", IDS, KEYS)
    assert not found.any() and vectors.shape == (37, 0) and failures == {}
    assert store.lookup("image", "test/model", IDS, KEYS, dim=DIM)[1].shape == (37, DIM)
    assert not (store_dir / "image").exists()
    embed(store, IDS[:10], KEYS[:10], compute=Model(IDS, KEYS, broken=["103"]))
    found, vectors, failures = store.lookup("image", "test/model", IDS, KEYS)
    assert found.tolist() == [True] * 10 + [False] * 27 and failures == {"103": "cannot decode"}
    ok = np.arange(37) < 10
    ok[3] = False
    np.testing.assert_array_equal(vectors[ok], expected()[ok])
    assert not vectors[~ok].any()


def test_entries_summarise_each_model(store_dir: Path) -> None:
    store = EmbeddingStore(store_dir)
    assert store.entries() == []
    embed(store, compute=Model(IDS, KEYS, broken=["100"]))
    store.embed("text", "st/mini", 4, IDS[:5], KEYS[:5], lambda p: (np.ones((len(p), 4)), {}), progress=False)
    image, text = store.entries()
    assert (image["arm"], image["model_id"], image["dim"], image["products"], image["failures"], image["shards"]) \
        == ("image", "test/model", DIM, 36, 1, 5)
    assert (text["arm"], text["model_id"], text["products"], text["shards"]) == ("text", "st/mini", 5, 1)
    assert image["bytes"] > 5 * 8 * DIM * 4 and image["created_at"] <= image["updated_at"]
    (model_folder(store_dir) / "index.sqlite").write_bytes(b"garbage" * 100)
    assert "error" in store.entries()[0]


def test_bad_arguments_and_bad_compute_output_are_refused(store_dir: Path) -> None:
    store = EmbeddingStore(store_dir)
    for bad in ({"keys": KEYS[:3]}, {"ids": ["1", "1"], "keys": ["a", "b"]}, {"chunk_size": 0}):
        with pytest.raises(ConfigError):
            embed(store, **{"compute": never, **bad})
    with pytest.raises(ConfigError, match="dim"):
        store.embed("image", "m", 0, IDS, KEYS, never)
    with pytest.raises(ConfigError, match="arm"):
        store.embed("../x", "m", DIM, IDS, KEYS, never)
    with pytest.raises(ValueError, match="shape"):
        embed(store, compute=lambda p: (np.zeros((len(p), DIM + 1)), {}))
    with pytest.raises(ValueError, match="outside its chunk"):
        embed(store, compute=lambda p: (np.zeros((len(p), DIM)), {99: "no"}))
    empty = embed(store, [], [], compute=never)
    assert len(empty) == 0 and empty.dim == DIM


def test_store_folder_must_be_creatable_and_writable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match=r"cannot create .*file/store.*--store or \$PRODREC_STORE"):
        EmbeddingStore(tmp_path / "file" / "store")
    monkeypatch.setattr(os, "access", lambda *args, **kwargs: False)
    with pytest.raises(StoreError, match=r"not writable.*--store or \$PRODREC_STORE"):
        EmbeddingStore(tmp_path / "ro")


def test_fingerprint_and_text_key() -> None:
    assert fingerprint(["a", "b"]) != fingerprint(["ab"]) and len(fingerprint([])) == 64
    assert text_key("a red shirt") == text_key("a red shirt") != text_key("a red shirt ")
    assert len(text_key("")) == 32
