"""Any catalog: the schema, description files, sniffed delimiters, string ids, text-only and image-only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import FakeImageEncoder

from prodrec import build_experiment, load_catalog
from prodrec.core.errors import CatalogError, ConfigError, UnknownIdError
from prodrec.data.schema import KAGGLE, CatalogSchema, locate_catalog


def test_generic_catalog_ids_kept_as_written(generic_dir: Path) -> None:
    cat = load_catalog(generic_dir / "items.csv", id_column="sku", image_column="photo",
                       text_columns="title,colour,category", label_columns="category,colour")
    assert cat.report.delimiter == ";" and cat.report.layout == "generic"
    assert len(cat) == 24 and cat.report.duplicate_ids == 0
    assert "0015970" in cat.ids and "007" in cat.ids and "7" in cat.ids  # 007 and 7 are two products
    assert cat.row("0015970")["image_path"].endswith("img/bag/0015970.webp")
    assert cat.row("007")["title"] != cat.row("7")["title"]
    with pytest.raises(UnknownIdError):
        cat.row("15970")  # no leading-zero-stripping lookalikes
    assert cat.schema.caption_columns == ("title", "category", "colour")
    assert cat.label_columns == ("category", "colour")


def test_description_file_beside_the_csv_and_flags_override(generic_dir: Path, tmp_path: Path) -> None:
    (generic_dir / "items.prodrec.toml").write_text(
        'csv = "items.csv"\nid_column = "sku"\nimage_column = "photo"\n'
        'text_columns = ["title", "colour", "category"]\nlabel_columns = ["category", "colour"]\n')
    try:
        by_csv = load_catalog(generic_dir / "items.csv")
        by_toml = load_catalog(generic_dir / "items.prodrec.toml")
        assert by_csv.ids.tolist() == by_toml.ids.tolist() and by_csv.label_columns == ("category", "colour")
        assert any("settings read from" in n for n in by_csv.report.notes)
        flagged = load_catalog(generic_dir / "items.csv", label_columns=["colour"])
        assert flagged.label_columns == ("colour",)
        by_folder = load_catalog(generic_dir)  # the folder's only *.prodrec.toml
        assert by_folder.ids.tolist() == by_csv.ids.tolist()
        with pytest.raises(UnknownIdError, match=r"'15970'.*did you mean '0015970'"):
            by_csv.row("15970")  # compared as written, with a pointer to the near miss
        with pytest.raises(UnknownIdError, match="did you mean '0015970'"):  # refused before any embedding
            build_experiment(catalog=by_csv, include_ids=["15970"], require_ids=True, store_dir=generic_dir / "no")
        assert not (generic_dir / "no").exists() or not any((generic_dir / "no").iterdir())
    finally:
        (generic_dir / "items.prodrec.toml").unlink()
    bad = tmp_path / "prodrec.json"
    bad.write_text(json.dumps({"id_colum": "sku"}))
    with pytest.raises(CatalogError, match=r"unknown setting\(s\) \['id_colum'\]"):
        locate_catalog(bad)
    (tmp_path / "prodrec.json").write_text("[]")
    with pytest.raises(CatalogError, match="table/object"):
        locate_catalog(tmp_path)


@pytest.mark.parametrize("sep", [",", ";", "\t", "|"])
def test_delimiter_is_sniffed(tmp_path: Path, sep: str) -> None:
    rows = [["sku", "title", "colour"], ["01", "Red, round mug", "Red"], ["02", "Blue mug", "Blue"]]
    quote = '"' if sep == "," else ""
    text = "\n".join(sep.join(f"{quote}{v}{quote}" if "," in v else v for v in r) for r in rows) + "\n"
    (tmp_path / "c.csv").write_text(text)
    cat = load_catalog(tmp_path / "c.csv", id_column="sku")
    assert cat.report.delimiter == sep and cat.row("01")["title"] == "Red, round mug"


def test_unsniffable_delimiter_says_what_was_seen(tmp_path: Path) -> None:
    (tmp_path / "c.csv").write_text("sku title colour\n1 a b\n")
    with pytest.raises(CatalogError, match=r"header 'sku title colour' has a single field.*--delimiter"):
        load_catalog(tmp_path / "c.csv", id_column="sku")
    assert len(load_catalog(tmp_path / "c.csv", id_column="sku", delimiter=" ")) == 1


def test_schema_checks_and_kaggle_preset() -> None:
    with pytest.raises(ConfigError, match="not both"):
        CatalogSchema(image_column="a", image_pattern="{id}.png")
    with pytest.raises(ConfigError, match="must contain"):
        CatalogSchema(image_pattern="img.png")
    with pytest.raises(ConfigError, match="unknown catalog setting"):
        KAGGLE.replace(colour="x")
    assert KAGGLE.replace(image_column="photo").image_pattern is None
    with pytest.raises(CatalogError, match=r"has no column\(s\) \[.*'nope'\]; its columns are"):
        KAGGLE.replace(label_columns=("nope",)).resolve(["id", "productDisplayName"])


def test_text_only_and_image_only_catalogs_say_which_arm_was_left_out(generic_dir: Path, store_dir: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    image_only = load_catalog(generic_dir / "items.csv", id_column="sku", image_column="photo", text_columns=[],
                              label_columns=["category"])
    assert image_only.text_columns == () and "image arm only" in str(image_only.report)
    from prodrec.embed.embedding import embed_arm
    from prodrec.rank.recommender import Recommender

    emb = embed_arm(image_only, "image", encoder=FakeImageEncoder(), store=store_dir, progress=False)
    assert Recommender({"image": emb}).modes == ["image"]
    caplog.set_level("WARNING")
    with pytest.raises(ConfigError, match="no arm can be built: image: not requested; text: the catalog has no "
                                          "text columns"):
        build_experiment(catalog=image_only, image_model=None, store_dir=store_dir)
    text_only = load_catalog(generic_dir / "items.csv", id_column="sku", text_columns=["title"])
    with pytest.raises(ConfigError, match="'fused' fuses arms, but only"):
        build_experiment(catalog=text_only, modes=["fused"], store_dir=store_dir, text_model="auto")
    assert "leaving out the image arm: the catalog has no images" in caplog.text


def test_arguments_checked_before_any_work(demo_dir: Path, store_dir: Path) -> None:
    """Bad arguments fail at once, before the catalog is read or a model built (no encoder is available)."""
    for bad in (dict(n_products=0), dict(batch_size=0), dict(chunk_size=-1), dict(alpha=1.5), dict(k=0),
                dict(weights={"image": -1})):
        with pytest.raises(ConfigError):
            build_experiment(demo_dir / "does-not-matter", store_dir=store_dir, **bad)
    with pytest.raises(ConfigError, match="k=48 but the catalog has 48"):
        build_experiment(demo_dir, k=48, store_dir=store_dir)  # checked after the load, before embedding

