"""prodrec report (issue 19): a self-contained HTML page of a recommendations table, opened in the real
browser the widget test uses (headless Chromium through Playwright): every image loads."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from prodrec import build_experiment, load_catalog
from prodrec.embed.vectors import Embeddings
from prodrec.evaluation.html_report import html_report, write_html_report
from prodrec.rank.export import export_table
from prodrec.rank.recommender import Recommender
from prodrec.rank.rules import Rules
from prodrec.rank.table import read_provenance, read_table
from prodrec.run.cli import main

CHROMIUM = os.environ.get("PRODREC_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


@pytest.fixture(scope="module")
def exported(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    cat = load_catalog(demo_dir)
    rng = np.random.default_rng(2)
    rec = Recommender({"image": Embeddings(cat.ids, rng.normal(size=(len(cat), 8))),
                       "text": Embeddings(cat.ids, rng.normal(size=(len(cat), 4)))})
    out = tmp_path_factory.mktemp("report") / "recs.parquet"
    export_table(rec, out, labels=cat.labels, name_column="productDisplayName", k=4, modes=["fused", "image"],
                 rules=Rules.make(same="gender"), arm_scores=True, progress=False,
                 provenance={"dataset": cat.describe()})
    return out, cat


def test_page_shows_each_sampled_query_with_its_lists(exported) -> None:
    out, cat = exported
    table = read_table(out)
    page = html_report(table, cat, read_provenance(out), n=5, seed=1)
    queries = re.findall(r"data-query='([^']+)'", page)
    assert len(queries) == 5 and len(set(queries)) == 5
    imgs = re.findall(r"<img alt='[^']*' src='([^']+)'", page)
    assert len(imgs) == 5 * 2 * (1 + 4)  # per query, per mode: the query and its 4
    assert all(src.startswith("data:image/jpeg;base64,") for src in imgs)
    assert "http://" not in page and "https://" not in page  # nothing fetched: self-contained
    assert "same gender" in page and "fused 0." in page and "image 0." in page
    first = queries[0]
    shown = table[(table["query_id"] == first) & (table["mode"] == "fused")]["id"].tolist()
    block = page.split(f"data-query='{first}'")[1].split("data-query=")[0]
    assert [a for a in re.findall(r"<img alt='([^']+)'", block)][1:5] == shown
    assert html_report(table, cat, {}, n=5, seed=1) != html_report(table, cat, {}, n=5, seed=2)


def test_unknown_products_and_markup_are_safe(exported) -> None:
    out, cat = exported
    table = pd.DataFrame({"query_id": ["90001", "90001"], "id": ["gone-<b>", "90002"], "rank": [1, 2],
                          "score": [0.5, 0.4]})
    page = html_report(table, cat, {}, n=3)
    assert "gone-&lt;b&gt;" in page and "gone-<b>" not in page and "not in the catalog" in page
    assert page.count("data:image/jpeg;base64,") == 3


def test_cli_report_finds_the_catalog_from_the_table(demo_dir: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    exp = build_experiment(demo_dir, arms=["colour"], store_dir=tmp_path / "store", progress=False)
    exp.export(tmp_path / "recs.csv", k=3, progress=False)
    assert main(["report", str(tmp_path / "recs.csv"), "--html", str(tmp_path / "r.html"), "--n", "4"]) == 0
    assert "self-contained" in capsys.readouterr().out
    assert (tmp_path / "r.html").read_text().count("data-query=") == 4
    assert main(["report", str(tmp_path / "recs.txt"), "--html", str(tmp_path / "x.html")]) == 2
    assert "ends in .parquet" in capsys.readouterr().err


def test_every_image_loads_in_a_real_browser(exported, tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run does)")
    pytest.importorskip("playwright")
    from playwright.sync_api import sync_playwright

    out, cat = exported
    page_path = write_html_report(out, tmp_path / "report.html", catalog=cat, n=6)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(page_path.resolve().as_uri(), wait_until="load", timeout=60_000)
            sizes = page.eval_on_selector_all("img", "els => els.map(e => [e.complete, e.naturalWidth])")
            assert len(sizes) == 6 * 2 * 5
            assert all(done and width > 0 for done, width in sizes), sizes
            assert page.inner_text("h1").startswith("Recommendations")
        finally:
            browser.close()
