"""Catalog files as shops export them (issue 18, item 1): Parquet, JSON Lines, JSON arrays, TSV, compressed
variants and DataFrames give the same catalog as the CSV; a description file works beside any of them; an
unreadable file says what it saw and what is read."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from shop_export import FLAGS, pid, write_export

from prodrec.core.errors import CatalogError, ConfigError
from prodrec.data.catalog import load_catalog
from prodrec.data.formats import as_strings, detect_format, read_catalog_file
from prodrec.data.schema import CatalogSchema
from prodrec.run import cli

FILES = ["products.parquet", "products.jsonl", "products.jsonl.gz", "products.json", "products.csv.zst",
         "products.tsv"]


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    root = tmp_path_factory.mktemp("shop")
    return root, write_export(root)


@pytest.mark.parametrize("name", FILES)
def test_every_format_gives_the_same_catalog(shop: tuple[Path, pd.DataFrame], name: str) -> None:
    root, df = shop
    cat = load_catalog(root / name, **FLAGS)
    ref = df.drop_duplicates("product_id")
    assert cat.ids.tolist() == ref["product_id"].tolist()  # every product kept, for the arms it has
    usable = [p for i, p in enumerate(ref["product_id"]) if i not in (3, 5)]  # no photo value; an empty file
    assert [p for p, path in zip(cat.ids, cat.image_paths) if path] == usable
    assert cat.row(pid(3))["image_note"] == "no image in the catalog"
    assert cat.row(pid(5))["image_note"].startswith("unreadable image (empty file")
    assert load_catalog(root / name, **FLAGS, require_images=True).ids.tolist() == usable
    r = cat.report
    assert r.rows_read == 26 and r.duplicate_ids == 2 and r.duplicate_examples == [pid(1), pid(2)]
    assert r.empty_images == 1 and r.empty_image_examples == [pid(3)]
    assert r.unreadable_images == 1 and r.unreadable_image_ids == [pid(5)]
    row = cat.row(pid(0))
    assert row["description"] == "A fine skirt & more. Colour: Blue Type: Skirts"  # HTML made plain text
    assert row["price"] == "10.5" and row["stock"] == "0"  # typed values written as they read
    assert Path(row["image_path"]) == root / "photos" / "skirts" / f"{pid(0)}.jpg"
    expected = {"products.parquet": "parquet", "products.jsonl": "jsonl", "products.jsonl.gz": "jsonl (gzip)",
                "products.json": "json", "products.csv.zst": "csv (zstd)", "products.tsv": "tsv"}[name]
    assert r.format == expected and expected in str(r)


def test_dataframe_with_root(shop: tuple[Path, pd.DataFrame], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, df = shop
    cat = load_catalog(df, root=root, **FLAGS)
    assert cat.ids.tolist() == load_catalog(root / "products.parquet", **FLAGS).ids.tolist()
    assert cat.report.format == "DataFrame" and "in memory" in str(cat.report)
    assert cat.root == root
    monkeypatch.chdir(tmp_path)  # without root: paths are relative to the current folder, where they are not
    lost = load_catalog(df, **FLAGS, require_images=False)
    assert lost.report.missing_images == 23 and all(p == "" for p in lost.image_paths)
    typed = pd.DataFrame({"sku": [15970, 7, 12345678901234567891 % 2**63], "year": [2012.0, None, 2013.0],
                          "tags": [["a", "b"], [], None], "title": ["x", None, "z"]})
    text = load_catalog(typed, id_column="sku")
    assert text.ids.tolist() == ["15970", "7", str(12345678901234567891 % 2**63)]
    assert text.df["year"].tolist()[::2] == ["2012", "2013"] and pd.isna(text.df["year"].iloc[1])
    assert text.df["tags"].iloc[0] == "a, b" and pd.isna(text.df["tags"].iloc[1])
    assert text.sentence("15970") == "2012 a, b x"


def test_long_integer_ids_in_parquet_keep_every_digit(tmp_path: Path) -> None:
    big = 2**62 + 1  # not representable as a float64
    pq.write_table(pa.table({"id": pa.array([big, None, 3], pa.int64()), "t": ["a", "b", "c"]}),
                   tmp_path / "c.parquet")
    df, info = read_catalog_file(tmp_path / "c.parquet")
    assert df["id"].tolist()[0] == str(big) and pd.isna(df["id"].iloc[1]) and info.rows_read == 3
    cat = load_catalog(tmp_path / "c.parquet")
    assert cat.ids.tolist() == [str(big), "3"] and cat.report.missing_id == 1


def test_description_file_beside_any_format(shop: tuple[Path, pd.DataFrame], tmp_path: Path) -> None:
    root, _ = shop
    desc = root / "products.prodrec.toml"
    desc.write_text('id_column = "product_id"\nimage_column = "image"\nlabel_columns = ["category", "colour"]\n'
                    'text_columns = ["title", "description", "colour"]\n')
    try:
        for name in ("products.parquet", "products.jsonl.gz", "products.json"):
            cat = load_catalog(root / name)
            assert cat.label_columns == ("category", "colour") and len(cat) == 24
            assert any("settings read from" in n for n in cat.report.notes)
    finally:
        desc.unlink()
    # a folder described by prodrec.toml naming the file: `file` (the general key) or `csv` (its older name)
    for key in ("file", "csv"):
        (root / "prodrec.toml").write_text(f'{key} = "products.jsonl"\nid_column = "product_id"\n'
                                           'image_column = "image"\n')
        try:
            assert load_catalog(root).report.format == "jsonl"
        finally:
            (root / "prodrec.toml").unlink()
    with pytest.raises(ConfigError, match="two catalog files"):
        CatalogSchema(file="a.csv", csv="b.csv")
    # a JSON description (one object) is told from a JSON catalog (an array of objects)
    (tmp_path / "items.json").write_text(json.dumps([{"sku": "A", "t": "x"}, {"sku": "B", "t": "y"}]))
    (tmp_path / "desc.json").write_text(json.dumps({"file": "items.json", "id_column": "sku"}))
    assert load_catalog(tmp_path / "desc.json").ids.tolist() == ["A", "B"]
    assert load_catalog(tmp_path / "items.json", id_column="sku").ids.tolist() == ["A", "B"]


def test_format_flag_and_content_win_over_a_wrong_extension(shop: tuple[Path, pd.DataFrame], tmp_path: Path) -> None:
    root, _ = shop
    (tmp_path / "export.csv").write_bytes((root / "products.parquet").read_bytes())  # Parquet named .csv
    (tmp_path / "photos").symlink_to(root / "photos")
    cat = load_catalog(tmp_path / "export.csv", **FLAGS)
    assert cat.report.format == "parquet" and len(cat) == 24
    assert any("holds parquet" in n for n in cat.report.notes)
    (tmp_path / "export.txt").write_bytes((root / "products.jsonl").read_bytes())  # unknown extension
    assert detect_format(tmp_path / "export.txt").format == "jsonl"
    (tmp_path / "export.data").write_bytes(gzip.compress((root / "products.tsv").read_bytes()))
    ff = detect_format(tmp_path / "export.data", "tsv")
    assert (ff.format, ff.compression, ff.decided_by) == ("tsv", "gzip", "--format")
    assert len(load_catalog(tmp_path / "export.data", format="tsv", **FLAGS)) == 24
    with pytest.raises(ConfigError, match="did you mean 'parquet'"):
        load_catalog(tmp_path / "export.csv", format="parquett", **FLAGS)


def test_unreadable_files_say_what_was_seen_and_what_is_read(tmp_path: Path) -> None:
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 this is not really parquet")
    with pytest.raises(CatalogError) as err:
        load_catalog(tmp_path / "broken.parquet")
    msg = str(err.value)
    assert "cannot read broken.parquet as parquet (chosen by its extension)" in msg
    assert "b'PAR1 this is not" in msg and "JSON Lines" in msg and "--format" in msg
    assert "--delimiter" not in msg
    (tmp_path / "one.json").write_text('{"sku": "A"}\n{"sku": "B"}\n')  # JSON Lines named .json
    with pytest.raises(CatalogError, match=r"as json .*array of objects.*JSON Lines \(\.jsonl\)"):
        load_catalog(tmp_path / "one.json", id_column="sku")
    assert load_catalog(tmp_path / "one.json", id_column="sku", format="jsonl").ids.tolist() == ["A", "B"]
    (tmp_path / "binary.csv").write_bytes(bytes(range(1, 32)) * 4)
    with pytest.raises(CatalogError, match="does not look like CSV text.*Parquet"):
        load_catalog(tmp_path / "binary.csv")


def test_missing_id_column_names_the_flag_and_the_closest_columns(shop: tuple[Path, pd.DataFrame]) -> None:
    root, _ = shop
    with pytest.raises(CatalogError) as err:
        load_catalog(root / "products.parquet", image_column="image")
    msg = str(err.value)
    assert "no id column 'id'" in msg and "--id-column" in msg
    assert "closest: 'product_id'" in msg and "--id-column product_id" in msg and "\n" not in msg
    with pytest.raises(CatalogError, match=r"has no column\(s\) \['color'\].*did you mean 'colour'"):
        load_catalog(root / "products.parquet", **{**FLAGS, "label_columns": ["color"]})


def test_as_strings_writes_typed_values_as_they_read() -> None:
    df = pd.DataFrame({1: [1.0, 2.5, float("nan")], "b": [True, False, None], "c": [{"k": 1}, "s", 3]})
    out = as_strings(df)
    assert list(out.columns) == ["1", "b", "c"]
    assert out["1"].tolist()[:2] == ["1", "2.5"] and pd.isna(out["1"].iloc[2])
    assert out["b"].tolist()[:2] == ["True", "False"] and pd.isna(out["b"].iloc[2])
    assert out["c"].tolist() == ['{"k": 1}', "s", "3"]


def test_load_report_shows_the_sentence_and_what_withheld_masks(shop: tuple[Path, pd.DataFrame], tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    root, _ = shop
    flags = ["load-report", "--data", str(root / "products.jsonl"), "--id-column", "product_id", "--image-column",
             "image", "--text-columns", "title,description,colour", "--label-columns", "category,colour",
             "--store", str(tmp_path / "store"), "--show-text", pid(0)]
    assert cli.main(flags) == 0
    out = capsys.readouterr().out
    assert f"text of {pid(0)}: 'Blue skirt no. 0 A fine skirt & more. Colour: Blue Type: Skirts Blue'" in out
    assert f"duplicate ids (1st kept)        2  '{pid(1)}', '{pid(2)}'" in out
    assert cli.main([*flags, "--protocol", "withheld", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["text"] == {pid(0): "skirt no. 0 A fine skirt & more. Colour: Type:"}
    # every usable product's title and description name its colour, and its description its category
    assert payload["withheld"] == {"columns": ["category", "colour"], "text_fields": ["title", "description"],
                                   "masked_label_values": {"category": 24, "colour": 48}}
    assert cli.main([*flags, "--text-clean", "none"]) == 0
    assert "<li>Colour: Blue</li>" in capsys.readouterr().out
