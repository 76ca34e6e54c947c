"""The learned fusion head (prodrec.embed.learned) on a small synthetic problem.

600 products, two labels A (6 classes) and B (5 classes) and three arms of random vectors: arm ``a``
carries label A's class centroid plus noise, arm ``b`` label B's, arm ``noise`` nothing. A head trained on
400 products must rank the other 200 better on both labels together than any single arm does.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("torch")

from prodrec.core.errors import ConfigError, StoreError
from prodrec.evaluation.runs import evaluate
from prodrec.embed.learned import LearnedHead, train_head
from prodrec.rank.recommender import Recommender
from prodrec.embed.vectors import Embeddings

N, N_TRAIN = 600, 400
# one torch thread: the matrices are tiny, and two threads on a busy 2-core machine spin-wait for each other
FAST = {"epochs": 25, "hidden": 64, "out_dim": 32, "batch_size": 100, "lr": 3e-3, "threads": 1, "progress": False}


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def make_problem() -> dict:
    """The synthetic catalog: ids, three arms of unit vectors, labels A and B."""
    rng = np.random.default_rng(7)
    ids = np.array([f"p{i:04d}" for i in range(N)])
    a, b = rng.integers(0, 6, N), rng.integers(0, 5, N)
    ca, cb = rng.normal(size=(6, 40)), rng.normal(size=(5, 24))
    arms = {
        "a": _unit(ca[a] + 1.1 * rng.normal(size=(N, 40))),
        "b": _unit(cb[b] + 1.0 * rng.normal(size=(N, 24))),
        "noise": _unit(rng.normal(size=(N, 16))),
    }
    labels = pd.DataFrame({"A": [f"a{v}" for v in a], "B": [f"b{v}" for v in b]}, index=ids)
    return {"ids": ids, "arms": arms, "labels": labels}


@pytest.fixture(scope="module")
def problem() -> dict:
    return make_problem()


def _train(problem: dict, **kw: object) -> LearnedHead:
    tr = slice(0, N_TRAIN)
    inputs = {k: v[tr] for k, v in problem["arms"].items()}
    args = dict(FAST, label_weights={"A": 0.5, "B": 0.5})
    args.update(kw)
    return train_head(inputs, problem["labels"], ids=list(problem["ids"][tr]), **args)


@pytest.fixture(scope="module")
def head(problem: dict) -> LearnedHead:
    return _train(problem, seed=0)


def _precision(problem: dict, vectors: np.ndarray) -> dict[str, float]:
    """precision@5 on A and B among the 200 held-out products, ranking by ``vectors``."""
    ids = problem["ids"][N_TRAIN:]
    rec = Recommender({"x": Embeddings(ids, vectors)})
    table = evaluate(rec, problem["labels"], k=5, columns=["A", "B"], n_boot=10, progress=False)
    rows = table[(table["mode"] == "x") & (table["metric"] == "precision")]
    return dict(zip(rows["label"], rows["value"]))


def test_training_lowers_the_loss(head: LearnedHead) -> None:
    curve = head.loss_curve
    assert len(curve) == FAST["epochs"] and all(np.isfinite(curve))
    assert curve[-1] < 0.9 * curve[0]


def test_learned_vectors_beat_every_input_arm(problem: dict, head: LearnedHead) -> None:
    held = {k: v[N_TRAIN:] for k, v in problem["arms"].items()}
    out = head.transform(held)
    assert out.shape == (N - N_TRAIN, 32) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    learned = _precision(problem, out)
    combined = np.mean(list(learned.values()))
    for name, vectors in held.items():
        single = _precision(problem, vectors)
        assert combined > np.mean(list(single.values())) + 0.05, (name, single, learned)
    # it uses both signals: each label is well above its random rate (1/6, 1/5)
    assert learned["A"] > 0.7 and learned["B"] > 0.7, learned


def test_numpy_transform_matches_the_torch_forward(problem: dict, head: LearnedHead) -> None:
    import torch

    held = {k: v[N_TRAIN:] for k, v in problem["arms"].items()}
    x = torch.from_numpy(head._features(held))
    s = {k: torch.from_numpy(v) for k, v in head.state.items()}
    z = torch.nn.functional.normalize(torch.relu(x @ s["w1"] + s["b1"]) @ s["w2"] + s["b2"], dim=1)
    np.testing.assert_allclose(head.transform(held), z.numpy(), atol=1e-5)


def test_transform_in_blocks_gives_the_same_rows(problem: dict, head: LearnedHead,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import prodrec.embed.learned.head as head_module

    held = {k: v[N_TRAIN:] for k, v in problem["arms"].items()}
    whole = head.transform(held)
    monkeypatch.setattr(head_module, "_ROWS_PER_BLOCK", 7)
    np.testing.assert_allclose(head.transform(held), whole, atol=1e-6)


def test_same_seed_same_weights_other_seed_differs(problem: dict, head: LearnedHead) -> None:
    again = _train(problem, seed=0)
    for k in head.state:
        np.testing.assert_array_equal(again.state[k], head.state[k], err_msg=k)
    assert again.fingerprint() == head.fingerprint()
    other = _train(problem, seed=1)
    assert not np.array_equal(other.state["w1"], head.state["w1"])
    assert other.fingerprint() != head.fingerprint()


def test_threads_are_restored(problem: dict) -> None:
    import torch

    before = torch.get_num_threads()
    _train(problem, seed=0, epochs=1, threads=before + 1)
    assert torch.get_num_threads() == before


def test_provenance_records_training(head: LearnedHead) -> None:
    p = head.provenance()
    json.dumps(p, allow_nan=False)  # JSON-safe
    assert p["train_ids"]["count"] == N_TRAIN and p["train_ids"]["first"][0] == "p0000"
    assert "w1" not in json.dumps(p)
    assert p["config"]["labels"] == ["A", "B"] and p["config"]["label_weights"] == {"A": 0.5, "B": 0.5}
    assert p["config"]["epochs"] == FAST["epochs"] and p["config"]["seed"] == 0
    assert p["arms"] == ["a", "b", "noise"] and p["input_dims"] == {"a": 40, "b": 24, "noise": 16}
    assert p["input_models"] == {"a": "unknown", "b": "unknown", "noise": "unknown"}
    assert len(p["loss_curve"]) == FAST["epochs"] and p["fingerprint"] == head.fingerprint()


def test_save_load_round_trip(problem: dict, head: LearnedHead, tmp_path: Path) -> None:
    head.save(tmp_path / "h")
    back = LearnedHead.load(tmp_path / "h")
    held = {k: v[N_TRAIN:] for k, v in problem["arms"].items()}
    np.testing.assert_array_equal(back.transform(held), head.transform(held))
    assert back.fingerprint() == head.fingerprint()
    assert back.train_ids == head.train_ids and back.loss_curve == pytest.approx(head.loss_curve)
    # saving again over it leaves exactly one weights file
    _train(problem, seed=1).save(tmp_path / "h")
    assert len(list((tmp_path / "h").glob("weights-*.npz"))) == 1
    assert LearnedHead.load(tmp_path / "h").config["seed"] == 1


def test_head_of_a_learned_arms_embeddings(problem: dict, head: LearnedHead, tmp_path: Path) -> None:
    head = dataclasses.replace(head, path=None)  # the module's head may have been saved by another test
    folder = head.save(tmp_path / "h")
    assert head.path == folder
    emb = Embeddings(problem["ids"][N_TRAIN:], head.transform({k: v[N_TRAIN:] for k, v in problem["arms"].items()}),
                     {"arm": "learned", "head_path": str(folder)})
    back = LearnedHead.of(emb)
    assert back.path == folder and back.fingerprint() == head.fingerprint()
    assert back.loss_curve == head.loss_curve and back.train_ids == head.train_ids
    with pytest.raises(ConfigError, match="not made by a learned head"):
        LearnedHead.of(Embeddings(emb.ids, emb.vectors, {"arm": "image"}))


def test_train_ids_fingerprint_is_the_one_saved_heads_recorded(head: LearnedHead) -> None:
    # heads saved before the kit shared one fingerprint function hashed each id followed by a NUL byte
    h = hashlib.sha256()
    for i in head.train_ids:
        h.update(i.encode("utf-8") + b"\x00")
    assert head.provenance()["train_ids"]["sha256"] == h.hexdigest()


def test_damaged_save_is_refused(head: LearnedHead, tmp_path: Path) -> None:
    folder = head.save(tmp_path / "h")
    weights = next(folder.glob("weights-*.npz"))
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="damaged"):
        LearnedHead.load(folder)
    weights.unlink()
    with pytest.raises(StoreError, match="missing"):
        LearnedHead.load(folder)
    (folder / "head.json").write_text("{not json")
    with pytest.raises(StoreError, match="damaged"):
        LearnedHead.load(folder)
    with pytest.raises(StoreError, match="no learned head"):
        LearnedHead.load(tmp_path / "nowhere")


def test_edited_metadata_is_refused(head: LearnedHead, tmp_path: Path) -> None:
    folder = head.save(tmp_path / "h")
    meta = json.loads((folder / "head.json").read_text())
    meta["config"]["temperature"] = 0.5
    (folder / "head.json").write_text(json.dumps(meta))
    with pytest.raises(StoreError, match="fingerprint"):
        LearnedHead.load(folder)


def test_transform_checks_arms_and_dims(problem: dict, head: LearnedHead) -> None:
    held = {k: v[N_TRAIN:] for k, v in problem["arms"].items()}
    with pytest.raises(ConfigError, match=r"missing input arm\(s\) \['noise'\]"):
        head.transform({"a": held["a"], "b": held["b"]})
    with pytest.raises(ConfigError, match="dimension 20.*24-d b"):
        head.transform(dict(held, b=held["b"][:, :20]))
    with pytest.raises(ConfigError, match="rows"):
        head.transform(dict(held, b=held["b"][:10]))
    bad = held["a"].copy()
    bad[3, 0] = np.nan
    with pytest.raises(ConfigError, match="NaN"):
        head.transform(dict(held, a=bad))
    # extra arms are ignored
    np.testing.assert_array_equal(head.transform(dict(held, extra=held["a"])), head.transform(held))


def test_nan_labels_are_never_positives(problem: dict) -> None:
    labels = problem["labels"].copy()
    labels.loc[labels.index[: N_TRAIN // 2], "B"] = np.nan  # half the training products lack label B
    tr = slice(0, N_TRAIN)
    inputs = {k: v[tr] for k, v in problem["arms"].items()}
    h = train_head(inputs, labels, ids=list(problem["ids"][tr]), seed=0, label_weights={"A": 0.5, "B": 0.5},
                   **{**FAST, "epochs": 5})
    assert all(np.isfinite(h.loss_curve)) and h.config["label_classes"]["B"] == 5
    # a label known for a single product has no positive pair: training on it alone is refused
    only = labels.assign(B=np.where(np.arange(len(labels)) == 0, "b0", None))
    with pytest.raises(ConfigError, match="fewer than 2 classes"):
        train_head(inputs, only, ids=list(problem["ids"][tr]), label_weights={"B": 1.0}, **FAST)


def test_the_supcon_loss_ignores_missing_labels() -> None:
    import torch

    from prodrec.embed.learned.train import supcon_loss

    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1]])
    w = torch.tensor([1.0])
    # products 0 and 1 both lack the label: no positives at all
    assert supcon_loss(torch, z, torch.tensor([[-1], [-1], [0]]), w, 0.1) is None
    # 0 and 2 share a class: the loss is small (they are close), and grows when 0 and 1 share it instead
    near = supcon_loss(torch, z, torch.tensor([[0], [1], [0]]), w, 0.1)
    far = supcon_loss(torch, z, torch.tensor([[0], [0], [1]]), w, 0.1)
    assert float(near) < float(far)


def test_argument_errors(problem: dict) -> None:
    ids = list(problem["ids"][:N_TRAIN])
    inputs = {k: v[:N_TRAIN] for k, v in problem["arms"].items()}
    labels = problem["labels"]
    with pytest.raises(ConfigError, match="rows"):
        train_head(dict(inputs, a=inputs["a"][:-1]), labels, ids=ids, **FAST)
    with pytest.raises(ConfigError, match=r"lacks \(\['A', 'B'\]\)|labels lacks"):
        train_head(inputs, labels, ids=ids, label_weights={"colour": 1.0}, **FAST)
    with pytest.raises(ConfigError, match="unique"):
        train_head(inputs, labels, ids=ids[:-1] + ids[:1], **FAST)
    with pytest.raises(ConfigError, match="empty"):
        train_head({k: v[:0] for k, v in inputs.items()}, labels, ids=[], **FAST)
    with pytest.raises(ConfigError, match="non-empty mapping"):
        train_head({}, labels, ids=ids, **FAST)
    with pytest.raises(ConfigError, match="no row"):
        train_head(inputs, labels.iloc[1:], ids=ids, **FAST)
    with pytest.raises(ConfigError, match="fewer than 2 classes"):
        train_head(inputs, labels.assign(A="same"), ids=ids, label_weights={"A": 1.0}, **FAST)
    with pytest.raises(ConfigError, match="epochs"):
        train_head(inputs, labels, ids=ids, **{**FAST, "epochs": 0})
    with pytest.raises(ConfigError, match="temperature"):
        train_head(inputs, labels, ids=ids, temperature=-1.0, **FAST)
    with pytest.raises(ConfigError, match="all be 0"):
        train_head(inputs, labels, ids=ids, label_weights={"A": 0.0}, **FAST)
    for bad in (-0.5, float("nan"), "x"):
        with pytest.raises(ConfigError, match=r"^label_weights .*'B'"):
            train_head(inputs, labels, ids=ids, label_weights={"A": 1.0, "B": bad}, **FAST)
    with pytest.raises(ConfigError, match="input_models"):
        train_head(inputs, labels, ids=ids, input_models={"clip": "x"}, **FAST)


def test_default_label_weights(problem: dict) -> None:
    ids = list(problem["ids"][:N_TRAIN])
    inputs = {k: v[:N_TRAIN] for k, v in problem["arms"].items()}
    equal = train_head(inputs, problem["labels"], ids=ids, **{**FAST, "epochs": 1})
    assert equal.config["label_weights"] == {"A": 0.5, "B": 0.5}
    kaggle = problem["labels"].rename(columns={"A": "articleType", "B": "baseColour"}).assign(gender="x")
    paper = train_head(inputs, kaggle, ids=ids, input_models={"a": "m-a"}, **{**FAST, "epochs": 1})
    assert paper.config["label_weights"] == {"articleType": 0.7, "baseColour": 0.3}
    assert paper.input_models == {"a": "m-a", "b": "unknown", "noise": "unknown"}


def test_missing_torch_names_the_extra(problem: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    from prodrec.core.errors import MissingDependency

    real = builtins.__import__

    def no_torch(name: str, *a: object, **k: object) -> object:
        if name == "torch" or name.startswith("torch."):
            raise ImportError("No module named 'torch'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    ids = list(problem["ids"][:N_TRAIN])
    inputs = {k: v[:N_TRAIN] for k, v in problem["arms"].items()}
    with pytest.raises(MissingDependency, match=r"pip install 'prodrec\[image\]'"):
        train_head(inputs, problem["labels"], ids=ids, **FAST)


@pytest.mark.parametrize("n, epochs", [(40, 1), (40, 3), (600, 2), (300, 10)])
def test_few_optimizer_steps_still_train(n: int, epochs: int) -> None:
    """A small catalog gives few steps (one batch per epoch): the schedule must not divide by a zero warm-up."""
    rng = np.random.default_rng(0)
    ids = [str(i) for i in range(n)]
    x = rng.normal(size=(n, 8)).astype(np.float32)
    labels = pd.DataFrame({"articleType": rng.integers(0, 3, n).astype(str),
                           "baseColour": rng.integers(0, 2, n).astype(str)}, index=ids)
    head = train_head({"image": x / np.linalg.norm(x, axis=1, keepdims=True)}, labels, ids=ids, epochs=epochs,
                      hidden=16, out_dim=8, threads=1, progress=False)
    assert len(head.loss_curve) == epochs and np.isfinite(head.loss_curve).all()
