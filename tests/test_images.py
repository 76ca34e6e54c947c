"""Decoding real-world images to the RGB picture a person sees (issue 6, cases 3-5)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from prodrec.data.images import ImageError, check_image_header, load_rgb


def test_modes_become_rgb(tmp_path: Path) -> None:
    red = (200, 30, 40)
    cases = {
        "gray.png": Image.new("L", (20, 20), 128),
        "cmyk.jpg": Image.new("RGB", (20, 20), red).convert("CMYK"),
        "rgba.png": Image.new("RGBA", (20, 20), (*red, 0)),  # fully transparent -> white background
        "palette.png": Image.new("RGB", (20, 20), red).convert("P"),
        "deep.png": Image.fromarray(np.full((20, 20), 65535, dtype=np.uint16)),
    }
    out = {}
    for name, im in cases.items():
        im.save(tmp_path / name)
        out[name] = load_rgb(str(tmp_path / name), size=16)
        assert out[name].shape == (16, 16, 3) and out[name].dtype == np.uint8
    assert np.all(out["gray.png"] == 128)
    assert np.all(out["rgba.png"] == 255)
    assert np.allclose(out["palette.png"][8, 8], red, atol=16)  # web-palette quantisation
    assert np.allclose(out["cmyk.jpg"][8, 8], red, atol=12)
    assert np.all(out["deep.png"] == 255)  # 16-bit white stays white, not clipped garbage


def test_exif_rotation_applied(tmp_path: Path) -> None:
    im = Image.new("RGB", (40, 20), (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, 20, 20))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    im.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    arr = load_rgb(str(tmp_path / "rot.jpg"), size=(20, 40))
    assert arr.shape == (40, 20, 3)  # portrait after rotation
    assert arr[5, 10, 0] > 200 and arr[35, 10, 2] > 200  # red on top, blue at the bottom


def test_bad_files_raise_image_error_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(tmp_path / "t.jpg")
    (tmp_path / "t.jpg").write_bytes((tmp_path / "t.jpg").read_bytes()[:1000])
    for name, why in (("empty.jpg", "empty file"), ("text.jpg", "not an image"), ("t.jpg", "cannot decode")):
        with pytest.raises(ImageError, match=why) as err:
            load_rgb(str(tmp_path / name))
        assert err.value.path.endswith(name)


def test_bomb_refused_without_decoding(tmp_path: Path) -> None:
    Image.new("1", (20000, 20000)).save(tmp_path / "bomb.png")
    with pytest.raises(ImageError, match="bomb|exceeds the limit"):
        load_rgb(str(tmp_path / "bomb.png"))
    Image.new("1", (7000, 7000)).save(tmp_path / "big.png")  # 49 MP: over the default 40 MP cap only
    with pytest.raises(ImageError, match="exceeds the limit of 40 MP"):
        check_image_header(str(tmp_path / "big.png"))
    assert check_image_header(str(tmp_path / "big.png"), max_pixels=10**8) == (7000, 7000)
