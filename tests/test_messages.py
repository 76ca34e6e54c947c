"""Messages (issue 18, item 6): --quiet leaves one summary line at most, figures draw non-Latin names with one
warning at most, notebooks on another catalog pick their queries from it without a warning."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import matplotlib
import pandas as pd
import pytest
from shop_export import FLAGS, write_export

from prodrec.core.errors import RankingError
from prodrec.data.catalog import load_catalog
from prodrec.run.experiment import build_experiment
from prodrec.viz import gallery

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["连衣裙 蓝色", "衬衫 红色", "Blue dress"]


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "prodrec.run.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src"), **env}, timeout=300)


def test_quiet_leaves_one_summary_line(tmp_path: Path) -> None:
    write_export(tmp_path, urls={7: "http://127.0.0.1:9/a.png", 8: "http://127.0.0.1:9/b.png"})
    flags = ["--data", str(tmp_path / "products.parquet"), "--id-column", "product_id", "--image-column", "image",
             "--store", str(tmp_path / "store")]
    loud = run_cli("fetch-images", *flags, PRODREC_OFFLINE="1")  # offline: nothing is dialled
    assert loud.returncode == 0, loud.stderr
    assert "WARNING prodrec.data.fetch: offline (PRODREC_OFFLINE=1): 2 image URL(s) not fetched" in loud.stderr
    assert "offline (PRODREC_OFFLINE=1)" in loud.stdout
    quiet = run_cli("fetch-images", *flags, "--quiet", PRODREC_OFFLINE="1")
    assert quiet.returncode == 0 and "offline (PRODREC_OFFLINE=1)" in quiet.stdout
    lines = quiet.stderr.strip().splitlines()
    assert len(lines) == 1, quiet.stderr
    assert lines[0].startswith("prodrec fetch-images: 1 warning(s) not shown (--quiet")
    assert "the first: offline (PRODREC_OFFLINE=1)" in lines[0]
    report = run_cli("load-report", *flags, "--quiet")
    assert report.returncode == 0 and report.stderr == ""  # nothing to warn about: not a line


def test_quiet_in_process_puts_the_environment_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``main([..., "--quiet"])`` called from Python silences the libraries for that command only: a later
    command (or a subprocess the caller starts) draws its progress bars again."""
    from prodrec.run import cli

    for key in ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_VERBOSITY"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    seen: dict[str, str | None] = {}

    def spy(args: object) -> int:
        seen.update({k: os.environ.get(k) for k in ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS")})
        return 0

    monkeypatch.setitem(cli.COMMANDS, "load-report", spy)
    assert cli.main(["load-report", "--data", str(tmp_path), "--quiet"]) == 0
    assert seen == {"TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}  # silenced while it ran
    assert "TQDM_DISABLE" not in os.environ and "HF_HUB_DISABLE_PROGRESS_BARS" not in os.environ
    assert "TRANSFORMERS_VERBOSITY" not in os.environ and os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"


@pytest.fixture
def fresh_glyphs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gallery._Glyphs, "checked", set())
    monkeypatch.setattr(gallery._Glyphs, "warned", False)


def _draw(*names: list[str]) -> list[str]:
    """Draw one figure for each list of ``names``; the glyph warnings matplotlib gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for values in names:
            fig = gallery.plot_distribution(pd.DataFrame({"name": values}), "name")
            fig.savefig(os.devnull, format="png")
            gallery.pyplot().close(fig)
    return [str(w.message) for w in caught if "Glyph" in str(w.message)]


def test_non_latin_names_without_a_font_warn_once(fresh_glyphs: None, monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(gallery, "_font_covering", lambda missing: None)  # as on a machine without CJK fonts
    caplog.set_level("WARNING")
    with matplotlib.rc_context():
        assert _draw(NAMES, ["裤子", "鞋"]) == []  # matplotlib's per-glyph warnings: none
    ours = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(ours) == 1 and "no installed font draws 8 character(s)" in ours[0] and "fonts-noto-cjk" in ours[0]


def test_non_latin_names_drawn_with_an_installed_font(fresh_glyphs: None, caplog: pytest.LogCaptureFixture) -> None:
    found = gallery._font_covering({ord(c) for c in "连衣裙蓝色衬衫红"})
    if found is None:
        pytest.skip("no font with CJK glyphs installed here (e.g. apt-get install fonts-wqy-microhei)")
    caplog.set_level("WARNING")
    with matplotlib.rc_context():
        assert _draw(NAMES) == []
        assert matplotlib.rcParams["font.family"] == ["sans-serif", found[0]]
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_queries_of_another_catalog_come_from_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_export(tmp_path)
    cat = load_catalog(tmp_path / "products.parquet", **FLAGS)
    kaggle_ids = ["15970", "10866", "19311", "17429", "21510"]  # the notebooks' defaults
    caplog.set_level("INFO")
    with pytest.raises(RankingError):  # k too large: stops after the query ids are handled, before any model
        build_experiment(catalog=cat, include_ids=kaggle_ids, k=500, store_dir=tmp_path / "store")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("none of the 5 query id(s) is in this catalog" in r.getMessage() for r in caplog.records)
    picked = cat.pick_queries(kaggle_ids, n=3, seed=0)
    assert len(picked) == 3 and set(picked) <= set(cat.ids) and cat.pick_queries(kaggle_ids, n=3, seed=0) == picked
    assert len({cat.row(p)["category"] for p in picked}) == 3  # distinct values of the first label column
    caplog.clear()
    with pytest.raises(RankingError):  # a mix: the unknown ones are worth a warning (a typo, say)
        build_experiment(catalog=cat, include_ids=[cat.ids[0], "nope"], k=500, store_dir=tmp_path / "store")
    assert any("left out: ['nope']" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
