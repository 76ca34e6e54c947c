"""Shared fixtures: small synthetic catalogs made by the tests, and the real sample in ../shared."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PRODREC_SHARED_DATA", ROOT.parent / "shared" / "data" / "fashion-sample"))

# Tests never touch the network, and never write to the user's cache.
os.environ.setdefault("PRODREC_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Notebook 06 in the small CI configuration: its learned arm trains on 1,000 products outside the sample, 10 epochs
# (the committed outputs are made with the same settings: `make notebook-outputs`).
os.environ.setdefault("PRODREC_NB_MAX_TRAIN", "1000")
os.environ.setdefault("PRODREC_NB_LEARN_EPOCHS", "10")
if "PRODREC_STORE" not in os.environ:  # subprocesses (CLI, notebooks) share one store per test session
    os.environ["PRODREC_STORE"] = tempfile.mkdtemp(prefix="prodrec-test-store-")
if os.environ.get("PYTEST_XDIST_WORKER"):  # one store per pytest-xdist worker: no run waits on another's lock
    os.environ["PRODREC_STORE"] = f"{os.environ['PRODREC_STORE'].rstrip('/')}-{os.environ['PYTEST_XDIST_WORKER']}"

# `make test` spreads the tests over pytest-xdist workers a module at a time (`--dist loadfile
# --no-loadscope-reorder`): a module's tests run one after the other on one worker, in the order below, and its
# module fixtures are made once. That keeps together what must not run side by side or apart: the two `pip
# wheel` builds of the checkout (both build in ./build), the two runs of the notebooks on the real sample (the
# second, nbval, finds every vector and learned head of the first in the worker's store), the MiniLM export and
# the torch-free run of what it kept. (`--dist loadgroup` with `xdist_group` marks would group single tests,
# but with pytest 9.2 it silently groups nothing: pytest-dev/pytest-xdist#1386.) The tests that start a local
# Ray run alone after the parallel ones (marked serial): beside a busy worker, a raylet missed Ray's fixed
# 30-second start-up limit.
SERIAL = ("test_scale.py::", "test_export.py::test_ray_engine")
# The longest tests first (minutes each: the notebook runs), so that their modules start first and the workers
# end together.
FIRST = ("test_notebooks.py::test_notebooks_on_real_sample", "test_notebooks.py::test_nbval_stored_outputs",
         "test_packaging.py::test_wheel_outside")


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if any(p in item.nodeid for p in SERIAL):
            item.add_marker(pytest.mark.serial)

    def rank(item: pytest.Item) -> int:
        hit = [i for i, p in enumerate(FIRST) if p in item.nodeid]
        return hit[0] if hit else len(FIRST)

    items.sort(key=rank)  # stable: the rest in the order pytest collected (module fixtures set up once)


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 48-product synthetic catalog in the Kaggle layout (drawn silhouettes, 8 article types)."""
    from prodrec.data.demo import write_demo_catalog

    return write_demo_catalog(tmp_path_factory.mktemp("demo"), n=48, seed=0, image_size=96, progress=False)


def make_generic_catalog(root: Path, n: int = 24, seed: int = 0) -> Path:
    """A catalog that is not in the Kaggle layout: ``items.csv`` separated by ``;``, string ids with leading
    zeros (``0015970``, and ``007`` beside ``7``), a ``photo`` column of paths into nested folders, PNG and
    WebP photos, columns ``sku;photo;title;colour;category``."""

    from prodrec.data.demo import draw_product

    rng = np.random.default_rng(seed)
    kinds = {"bag": "Handbags", "shoe": "Casual Shoes", "watch": "Watches", "tee": "Tshirts"}
    colours = ["Red", "Blue", "Black"]
    ids = ["0015970", "007", "7"] + [f"SKU-{i:04d}" for i in range(n - 3)]
    lines = ["sku;photo;title;colour;category"]
    for j, sku in enumerate(ids):
        cat = list(kinds)[j % len(kinds)]
        colour = colours[(j // len(kinds)) % len(colours)]
        ext = "webp" if j % 2 == 0 else "png"
        rel = f"img/{cat}/{sku}.{ext}"
        (root / "img" / cat).mkdir(parents=True, exist_ok=True)
        draw_product(kinds[cat], colour, rng, 64).save(root / rel)
        lines.append(f"{sku};{rel};{colour} {cat} no. {j};{colour};{cat}")
    (root / "items.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="session")
def generic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_generic_catalog(tmp_path_factory.mktemp("generic"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED / "styles.csv").is_file():
        pytest.skip(f"real sample catalog not found at {SHARED} (set PRODREC_SHARED_DATA)")
    return SHARED


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "store"


def unit_rows(n: int, d: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


from prodrec.embed.encoders.base import ImageEncoder  # noqa: E402


class FakeImageEncoder(ImageEncoder):
    """A deterministic image 'model' (per-channel colour histograms, 24-d) for tests without a framework."""

    name, dim, input_size = "fake-hist", 24, 32

    def __init__(self) -> None:
        super().__init__()
        self.weights, self.weight_source, self.choice_reason = "none", "test", "test"
        self.calls = 0

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        self.calls += 1
        h = [[np.histogram(im[..., c], bins=8, range=(0, 256))[0] for c in range(3)] for im in batch]
        return np.asarray(h, dtype=np.float32).reshape(len(batch), -1) + 1e-3
