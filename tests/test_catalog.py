"""Catalog loading: layouts, the load report, dirty rows, sampling (issue 6, cases 1-3, 5-8)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from prodrec.data.catalog import CatalogError, load_catalog
from prodrec.core.errors import DataNotFound
from prodrec.data import find_data_dir
from prodrec.core.errors import ConfigError, UnknownIdError

HEADER = "id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,productDisplayName\n"


def make_catalog(root: Path, rows: list[str], images: list[int] | None = None, header: str = HEADER) -> Path:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "styles.csv").write_text(header + "".join(r + "\n" for r in rows), encoding="utf-8")
    ids = images if images is not None else [int(r.split(",")[0]) for r in rows]
    for i in ids:
        Image.new("RGB", (40, 60), (i % 255, 80, 120)).save(root / "images" / f"{i}.jpg")
    return root


ROW = "{i},Men,Apparel,Topwear,Tshirts,Blue,Summer,2012,Casual,Blue Tee {i}"


def test_kaggle_layout_and_report(demo_dir: Path) -> None:
    cat = load_catalog(demo_dir)
    assert len(cat) == 48 and cat.report.layout == "kaggle"
    assert cat.ids.tolist() == sorted(cat.ids.tolist())
    assert all(Path(p).is_file() for p in cat.image_paths)
    assert "usable products" in str(cat.report) and cat.report.products == 48


def test_myntradataset_subfolder(tmp_path: Path, demo_dir: Path) -> None:
    shutil.copytree(demo_dir, tmp_path / "myntradataset")
    assert len(load_catalog(tmp_path)) == 48
    assert len(load_catalog(tmp_path / "myntradataset" / "styles.csv")) == 48


def test_unquoted_commas_recovered_into_name(tmp_path: Path) -> None:
    rows = [ROW.format(i=1), "2,Men,Apparel,Topwear,Tshirts,Blue,Summer,2012,Casual,Roadster Men, Blue, Tee",
            ROW.format(i=3)]
    cat = load_catalog(make_catalog(tmp_path, rows))
    assert len(cat) == 3
    assert cat.report.malformed_recovered == 1 and cat.report.malformed_skipped == 0
    assert cat.row(2)["productDisplayName"] == "Roadster Men, Blue, Tee"
    assert cat.row(2)["usage"] == "Casual"


def test_malformed_row_skipped_without_overflow_column(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    for i in (1, 2, 3):
        Image.new("RGB", (8, 8)).save(tmp_path / "p" / f"{i}.png")
    (tmp_path / "c.csv").write_text("sku,title\n1,a\n2,b,extra,more\n3,c\n")
    cat = load_catalog(tmp_path / "c.csv", id_column="sku", image_pattern="p/{id}.png", text_columns=["title"])
    assert cat.ids.tolist() == ["1", "3"]
    assert cat.report.malformed_skipped == 1 and cat.report.rows_read == 3
    assert "2,b,extra,more" in cat.report.malformed_examples[0]


def test_generic_layout_with_image_column(tmp_path: Path) -> None:
    (tmp_path / "pics").mkdir()
    Image.new("RGB", (8, 8), "red").save(tmp_path / "pics" / "a.png")
    Image.new("RGB", (8, 8), "blue").save(tmp_path / "pics" / "b.png")
    (tmp_path / "items.csv").write_text("sku,photo,title,colour\nA1,pics/a.png,Red mug,Red\nB2,pics/b.png,Blue mug,Blue\n")
    cat = load_catalog(tmp_path / "items.csv", id_column="sku", image_column="photo", text_columns=["title", "colour"])
    assert cat.ids.tolist() == ["A1", "B2"] and cat.report.layout == "generic"
    assert cat.row("B2")["title"] == "Blue mug"
    no_images = load_catalog(tmp_path / "items.csv", id_column="sku")  # a catalog without images: text only
    assert not no_images.has_images and no_images.image_paths == ["", ""]
    assert no_images.text_columns == ("photo", "title", "colour") and "text arm only" in str(no_images.report)
    with pytest.raises(CatalogError, match=r"has no column\(s\) \['nope'\]"):
        load_catalog(tmp_path / "items.csv", id_column="sku", image_column="photo", text_columns=["nope"])


def test_missing_images_counted_and_listed(tmp_path: Path) -> None:
    cat = load_catalog(make_catalog(tmp_path, [ROW.format(i=i) for i in range(1, 6)], images=[1, 2, 4]))
    assert cat.ids.tolist() == ["1", "2", "4"]
    assert cat.report.missing_images == 2 and cat.report.missing_image_examples == ["3", "5"]
    assert "image files missing             2  '3', '5'" in str(cat.report)
    text_only = load_catalog(tmp_path, require_images=False)
    assert len(text_only) == 5 and text_only.row(3)["image_path"] == ""


@pytest.mark.parametrize(
    "content, reason",
    [(b"", "empty file"), (b"this is not a picture", "not an image file"),
     (None, "cannot")],  # None: a truncated JPEG (header fine, data cut)
)
def test_unreadable_images_skipped_with_file_named(tmp_path: Path, content: bytes | None, reason: str) -> None:
    root = make_catalog(tmp_path, [ROW.format(i=i) for i in (1, 2)])
    bad = root / "images" / "2.jpg"
    if content is None:
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8)).save(bad)
        bad.write_bytes(bad.read_bytes()[:5000])
        # the header is intact, so loading keeps it; decoding for embedding names it (see test_images)
        from prodrec.data.images import ImageError, load_rgb

        assert len(load_catalog(root)) == 2
        with pytest.raises(ImageError, match="2.jpg.*cannot decode"):
            load_rgb(str(bad))
        return
    bad.write_bytes(content)
    cat = load_catalog(root)
    assert cat.ids.tolist() == ["1"]
    assert cat.report.unreadable_images == 1
    assert reason in cat.report.unreadable_image_examples[str(bad)]
    assert "2.jpg" in str(cat.report)


def test_headers_are_checked_again_when_a_file_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second load in one process reuses the header checks of unchanged files, never a stale verdict."""
    from prodrec.data import catalog as catalog_module

    root = make_catalog(tmp_path, [ROW.format(i=i) for i in (1, 2, 3)])
    checked: list[int] = []
    real = catalog_module._check_headers
    monkeypatch.setattr(catalog_module, "_check_headers", lambda p, *a: checked.append(len(p)) or real(p, *a))
    assert len(load_catalog(root)) == 3 and len(load_catalog(root)) == 3
    assert checked == [3]  # the second load read no header
    bad = root / "images" / "2.jpg"
    before = bad.stat()
    bad.write_bytes(b"x" * before.st_size)  # same size, new content and time
    os.utime(bad, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000))
    cat = load_catalog(root)
    assert checked == [3, 3] and cat.ids.tolist() == ["1", "3"] and cat.report.unreadable_images == 1
    bad.unlink()
    assert load_catalog(root).report.missing_images == 1


def test_decompression_bomb_refused_by_header(tmp_path: Path) -> None:
    root = make_catalog(tmp_path, [ROW.format(i=i) for i in (1, 2)])
    # A PNG that declares 20000 x 20000 but is tiny on disk: refused before any pixel is decoded.
    Image.new("1", (20000, 20000)).save(root / "images" / "2.jpg", format="PNG")
    assert (root / "images" / "2.jpg").stat().st_size < 200_000
    cat = load_catalog(root)
    assert cat.ids.tolist() == ["1"]
    assert "decompression bomb" in next(iter(cat.report.unreadable_image_examples.values())) or \
        "exceeds the limit" in next(iter(cat.report.unreadable_image_examples.values()))


def test_duplicate_ids_first_wins(tmp_path: Path) -> None:
    rows = [ROW.format(i=1), ROW.format(i=2), "1,Women,Apparel,Topwear,Tops,Red,Fall,2015,Casual,Second one"]
    cat = load_catalog(make_catalog(tmp_path, rows, images=[1, 2]))
    assert cat.ids.tolist() == ["1", "2"]
    assert cat.report.duplicate_ids == 1 and cat.report.duplicate_examples == ["1"]
    assert cat.row(1)["productDisplayName"] == "Blue Tee 1"


def test_nan_fields_counted_and_non_utf8(tmp_path: Path) -> None:
    rows = ["1,Men,Apparel,Topwear,Tshirts,,Summer,,Casual,Plain tee", "2,Women,Apparel,Topwear,Tops,Red,,2013,,"]
    root = make_catalog(tmp_path, rows + ["3,Men,Apparel,Topwear,Tshirts,Blue,Summer,2012,Casual,Caf\xe9 tee"])
    raw = (root / "styles.csv").read_text(encoding="utf-8").encode("cp1252")  # \xe9 as one Latin-1 byte
    (root / "styles.csv").write_bytes(raw)
    cat = load_catalog(root)
    assert cat.report.encoding == "cp1252" and "not valid UTF-8" in cat.report.notes[0]
    assert cat.row(3)["productDisplayName"] == "Café tee"
    assert cat.report.nan_counts["baseColour"] == 1 and cat.report.nan_counts["year"] == 1
    assert cat.report.nan_counts["usage"] == 1 and cat.report.nan_counts["productDisplayName"] == 1


def test_empty_and_tiny_catalogs(tmp_path: Path) -> None:
    root = make_catalog(tmp_path / "empty", [])
    with pytest.raises(CatalogError, match="no usable products"):
        load_catalog(root)
    (tmp_path / "blank").mkdir()
    (tmp_path / "blank" / "styles.csv").write_text("")
    with pytest.raises(CatalogError, match="empty"):
        load_catalog(tmp_path / "blank")
    one = load_catalog(make_catalog(tmp_path / "one", [ROW.format(i=7)]))
    assert len(one) == 1  # loads; ranking refuses it with a clear message (test_rank)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_catalog(tmp_path / "nowhere")


def test_sampling_is_seeded_and_stratified(demo_dir: Path) -> None:
    cat = load_catalog(demo_dir)
    a, b, c = cat.sample(16, seed=1), cat.sample(16, seed=1), cat.sample(16, seed=2)
    assert a.ids.tolist() == b.ids.tolist() != c.ids.tolist()
    assert a.sample_info == {"n_requested": 16, "n": 16, "seed": 1, "stratify": None, "all": False}
    s = cat.sample(16, seed=0, stratify="articleType")
    assert s.df["articleType"].value_counts().tolist() == [2] * 8  # 6 of each of 8 types -> 2 each
    assert len(cat.sample(None)) == len(cat.sample(10_000)) == 48
    with pytest.raises(ConfigError, match="positive"):
        cat.sample(0)
    with pytest.raises(UnknownIdError, match="unknown product id"):
        cat.positions([123])


def test_find_data_dir_order_and_message(tmp_path: Path, demo_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PRODREC_DATA", raising=False)
    with pytest.raises(DataNotFound) as err:
        find_data_dir()
    msg = str(err.value)
    for hint in ("--data", "$PRODREC_DATA", "/kaggle/input/fashion-product-images-small",
                 "data/fashion-product-images-small", "prodrec fetch-data", "prodrec demo-catalog"):
        assert hint in msg
    monkeypatch.setenv("PRODREC_DATA", str(demo_dir))
    assert find_data_dir() == demo_dir
    assert find_data_dir(str(tmp_path)) == tmp_path
    with pytest.raises(DataNotFound, match="does not exist"):
        find_data_dir(tmp_path / "missing")


@pytest.mark.shared_data
def test_real_sample_catalog(shared_data: Path) -> None:
    cat = load_catalog(shared_data)
    r = cat.report
    assert r.rows_read == 44446 and r.missing_images == 44446 - 9583
    assert len(cat) == 9583 and r.unreadable_images == 0 and r.malformed_skipped == 0
    text_only = load_catalog(shared_data, require_images=False)
    assert len(text_only) == 44446
    # the data README's facts, as the loader counts them
    assert text_only.report.nan_counts == {"productDisplayName": 7, "gender": 0, "masterCategory": 0,
                                           "subCategory": 0, "articleType": 0, "baseColour": 15, "season": 21,
                                           "year": 1, "usage": 317}
    assert cat.label_columns == ("articleType", "baseColour", "subCategory", "gender")
    assert cat.row("15970")["articleType"] == "Shirts" and cat.ids.dtype == object
