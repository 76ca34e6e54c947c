"""Build hook: ship the repository's notebooks and Kaggle metadata inside the package.

``notebooks/*.ipynb`` and ``kaggle-metadata.json`` live at the top of the repository (where people read and
edit them); wheels carry copies under ``prodrec/_bundled/``, which ``prodrec run-notebooks``,
``prodrec notebooks copy`` and ``prodrec kaggle-stage`` use when the package runs outside a checkout.
Everything else about the package is in ``pyproject.toml``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
BUNDLED = [*sorted((ROOT / "notebooks").glob("*.ipynb")), ROOT / "notebooks" / "nbval_sanitize.cfg"]


class BuildWithNotebooks(build_py):
    def run(self) -> None:
        super().run()
        dest = Path(self.build_lib) / "prodrec" / "_bundled"
        (dest / "notebooks").mkdir(parents=True, exist_ok=True)
        for path in BUNDLED:
            shutil.copy2(path, dest / "notebooks" / path.name)
        shutil.copy2(ROOT / "kaggle-metadata.json", dest / "kaggle-metadata.json")


setup(cmdclass={"build_py": BuildWithNotebooks})
