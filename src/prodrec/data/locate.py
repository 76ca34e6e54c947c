"""Where the catalog is: discovery order, and the optional download."""

from __future__ import annotations

import os
from pathlib import Path

from ..core.net import reachable
from ..core.errors import DataNotFound, MissingDependency
from .schema import find_description, kaggle_root

KAGGLE_SLUG = "paramaggarwal/fashion-product-images-small"
KAGGLE_INPUT_DIR = Path("/kaggle/input/fashion-product-images-small")
LOCAL_DATA_DIR = Path("data/fashion-product-images-small")
DATA_ENV = "PRODREC_DATA"


def candidate_dirs(explicit: str | os.PathLike[str] | None = None) -> list[tuple[str, Path]]:
    out: list[tuple[str, Path]] = []
    if explicit:
        out.append(("--data", Path(explicit).expanduser()))
    if os.environ.get(DATA_ENV):
        out.append((f"${DATA_ENV}", Path(os.environ[DATA_ENV]).expanduser()))
    out.append(("Kaggle input", KAGGLE_INPUT_DIR))
    out.append(("local data folder", LOCAL_DATA_DIR))
    return out


def find_data_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The catalog to use: ``explicit``, ``$PRODREC_DATA``, the Kaggle input folder, ``./data/...``.

    An explicit path is used as given (a generic CSV included) and must exist; the others must hold a
    Kaggle-layout ``styles.csv``.
    """
    tried = []
    for label, path in candidate_dirs(explicit):
        if label == "--data":
            if not path.exists():
                raise DataNotFound(f"--data {path} does not exist")
            return path
        described = kaggle_root(path) is not None or find_description(path) is not None
        if described or (label.startswith("$") and path.exists()):
            return path
        tried.append(f"{label}: {path}")
    raise DataNotFound(
        "no product catalog found. Looked in:\n  "
        + "\n  ".join(tried)
        + "\nFixes: pass --data DIR (a folder with styles.csv and images/, or a CSV), set "
        f"${DATA_ENV}, run `prodrec fetch-data` (downloads {KAGGLE_SLUG} with kagglehub; needs network "
        "and Kaggle credentials), or `prodrec demo-catalog DIR` for a small synthetic catalog that works offline."
    )


def fetch_data(dest: str | os.PathLike[str] = LOCAL_DATA_DIR) -> Path:
    """Download the Kaggle dataset with kagglehub and link it at ``dest``. Needs network access."""
    dest = Path(dest)
    if kaggle_root(dest) is not None:
        return dest
    if not reachable("www.kaggle.com"):
        raise DataNotFound(
            f"cannot reach www.kaggle.com to download {KAGGLE_SLUG}. Download it elsewhere and pass "
            "--data DIR, or use `prodrec demo-catalog DIR` offline."
        )
    try:
        import kagglehub
    except ImportError as exc:
        raise MissingDependency("fetch-data needs kagglehub: pip install 'prodrec[notebooks]' (or kagglehub)") from exc
    path = Path(kagglehub.dataset_download(KAGGLE_SLUG))
    root = kaggle_root(path) or path
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_symlink():
        dest.unlink()
    dest.symlink_to(root.resolve(), target_is_directory=True)
    return dest
