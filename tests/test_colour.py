"""The training-free colour arm: what it sees on synthetic photos, failures, identity, and the real sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps

from prodrec.embed.encoders.base import ImageEncoder, ImageEncoderLike
from prodrec.embed.encoders.colour import ColourEncoder, rgb_to_hsv
from prodrec.core.errors import ConfigError
from prodrec.data.images import ImageError, to_rgb

RED, DARK_RED, ORANGE, BLUE, GREEN = (200, 30, 30), (120, 15, 20), (235, 120, 20), (30, 60, 190), (40, 150, 60)
WHITE = (255, 255, 255)


def product(colour: tuple[int, int, int], shape: str = "shirt", size: int = 96,
            background: tuple[int, ...] = WHITE, mode: str = "RGB") -> Image.Image:
    """A plain product drawn on a plain background: a shirt-like polygon, an ellipse or a small square."""
    im = Image.new(mode, (size, size), background)
    d = ImageDraw.Draw(im)
    s = size / 96
    fill = colour if mode != "RGBA" else (*colour, 255)
    if shape == "shirt":
        d.polygon([(p[0] * s, p[1] * s) for p in ((30, 15), (66, 15), (86, 35), (74, 45), (68, 40), (68, 85),
                                                 (28, 85), (28, 40), (22, 45), (10, 35))], fill=fill)
    elif shape == "ellipse":
        d.ellipse((20 * s, 10 * s, 76 * s, 88 * s), fill=fill)
    elif shape == "square":
        d.rectangle((40 * s, 40 * s, 56 * s, 56 * s), fill=fill)
    else:
        raise ValueError(shape)
    return im


def save(im: Image.Image, path: Path, **kw: object) -> str:
    im.save(path, **kw)
    return str(path)


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def enc() -> ColourEncoder:
    return ColourEncoder()


def test_encoder_interface_and_unit_norm_float32(enc: ColourEncoder, tmp_path: Path) -> None:
    paths = [save(product(c), tmp_path / f"{i}.jpg", quality=92) for i, c in enumerate((RED, BLUE, GREEN))]
    vecs, fails = enc.encode_with_failures(paths, progress=False)
    assert fails == {}
    assert vecs.dtype == np.float32 and vecs.shape == (3, enc.dim)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert (vecs >= 0).all()
    assert isinstance(enc, ImageEncoderLike)
    info = enc.describe()
    assert info["name"] == enc.name == "colour-hist"
    assert info["model_id"] == enc.model_id and info["model_id"].startswith("colour-hist/")
    assert info["dim"] == enc.dim == 12 * 3 * 3 + 5
    assert (info["weights"], info["weight_source"], info["device"]) == ("none", "training-free", "cpu")
    assert info["params"]["hue_bins"] == 12 and "preprocessing" in info
    np.testing.assert_array_equal(enc.encode(paths, progress=False), vecs)


def test_same_colour_matches_across_shapes_and_different_colours_do_not(enc: ColourEncoder) -> None:
    ims = {name: np.asarray(product(c, shape).resize((56, 56), Image.BILINEAR))
           for name, c, shape in (("red shirt", RED, "shirt"), ("red ellipse", RED, "ellipse"),
                                  ("red square", RED, "square"), ("blue shirt", BLUE, "shirt"),
                                  ("green shirt", GREEN, "shirt"), ("orange shirt", ORANGE, "shirt"),
                                  ("dark red shirt", DARK_RED, "shirt"))}
    v = dict(zip(ims, enc.encode_arrays(np.stack(list(ims.values())))))
    assert cos(v["red shirt"], v["red ellipse"]) > 0.95
    assert cos(v["red shirt"], v["red square"]) > 0.9
    assert cos(v["red shirt"], v["blue shirt"]) < 0.2
    assert cos(v["red shirt"], v["green shirt"]) < 0.2
    # graded, not all-or-nothing: a red is nearer orange and dark red than blue
    assert cos(v["red shirt"], v["orange shirt"]) > cos(v["red shirt"], v["blue shirt"]) + 0.1
    assert cos(v["red shirt"], v["dark red shirt"]) > cos(v["red shirt"], v["blue shirt"]) + 0.1
    # nearest neighbour of the red shirt among the others is the red ellipse
    others = [k for k in v if k != "red shirt"]
    assert max(others, key=lambda k: cos(v["red shirt"], v[k])) == "red ellipse"


def test_white_and_plain_backgrounds_are_ignored(enc: ColourEncoder) -> None:
    on_white = np.asarray(product(RED, "square", size=56))  # a small product: ~9% of the photo
    full_red = np.full((56, 56, 3), RED, dtype=np.uint8)  # no background at all
    on_grey = np.asarray(product(RED, "square", size=56, background=(205, 205, 210)))
    hist = enc.histograms(np.stack([on_white, full_red, on_grey]))
    white_bin, grey_bins = enc.dim - 1, slice(enc.dim - enc.grey_bins, enc.dim)
    assert hist[0, white_bin] == pytest.approx(0.0, abs=1e-6)  # the white backdrop is not counted
    assert hist[0, grey_bins].sum() < 0.01
    assert hist[2, grey_bins].sum() < 0.01  # nor a plain light-grey one
    v = enc.encode_arrays(np.stack([on_white, full_red, on_grey]))
    assert cos(v[0], v[1]) > 0.98 and cos(v[0], v[2]) > 0.98
    w, whole = enc.foreground(np.stack([on_white, full_red]))
    assert whole.tolist() == [False, True]  # the all-red photo falls back to the whole image
    assert w[0, 0, 0] == 0.0 and w[0, 28, 28] == 1.0


def test_photo_without_foreground_still_gets_a_valid_vector(enc: ColourEncoder, tmp_path: Path) -> None:
    paths = [save(Image.new("RGB", (64, 64), WHITE), tmp_path / "white.jpg"),
             save(Image.new("RGB", (64, 64), (0, 0, 0)), tmp_path / "black.png"),
             save(product(WHITE, background=WHITE), tmp_path / "white-on-white.jpg")]
    vecs, fails = enc.encode_with_failures(paths, progress=False)
    assert fails == {}
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert vecs[0].argmax() == enc.dim - 1  # white: the brightest grey bin
    assert vecs[1].argmax() == enc.dim - enc.grey_bins  # black: the darkest
    assert cos(vecs[0], vecs[2]) > 0.99


def test_unusable_files_are_failures_with_reasons(enc: ColourEncoder, tmp_path: Path) -> None:
    good = save(product(BLUE), tmp_path / "good.jpg")
    raw = Path(good).read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(raw[: len(raw) // 3])
    (tmp_path / "text.jpg").write_text("not an image")
    (tmp_path / "empty.jpg").write_bytes(b"")
    paths = [good, str(tmp_path / "truncated.jpg"), str(tmp_path / "text.jpg"), str(tmp_path / "empty.jpg"),
             str(tmp_path / "missing.jpg"), good]
    vecs, fails = enc.encode_with_failures(paths, batch_size=2, progress=False)
    assert sorted(fails) == [1, 2, 3, 4]
    assert all(isinstance(r, str) and r for r in fails.values())
    assert "identify" in fails[2] and "empty" in fails[3] and "No such file" in fails[4]
    assert not vecs[sorted(fails)].any()  # failed rows are zero *and* listed, never passed off as vectors
    np.testing.assert_allclose(np.linalg.norm(vecs[[0, 5]], axis=1), 1.0, atol=1e-5)
    with pytest.raises(ImageError, match="4 image"):
        enc.encode(paths, progress=False)
    small = ColourEncoder(max_pixels=1000)
    _, fails = small.encode_with_failures([good], progress=False)
    assert "exceeds" in fails[0]


def test_rgba_png_greyscale_palette_and_odd_sizes(enc: ColourEncoder, tmp_path: Path) -> None:
    ref = save(product(RED), tmp_path / "ref.jpg", quality=95)
    rgba = save(product(RED, mode="RGBA", background=(0, 0, 0, 0)), tmp_path / "alpha.png")  # transparent -> white
    palette = save(product(RED).convert("P", palette=Image.Palette.ADAPTIVE, colors=16), tmp_path / "p.png")
    wide = save(product(RED).resize((300, 120)), tmp_path / "wide.jpg", quality=95)
    grey = save(product(RED).convert("L"), tmp_path / "grey.jpg")
    vecs, fails = enc.encode_with_failures([ref, rgba, palette, wide, grey], progress=False)
    assert fails == {}
    for i in (1, 2, 3):
        assert cos(vecs[0], vecs[i]) > 0.97
    chroma = vecs[4][: enc.dim - enc.grey_bins]
    assert chroma.max() < 1e-6 and vecs[4].sum() > 0  # a grey-scale photo has only grey bins


def test_model_id_tracks_every_vector_parameter() -> None:
    base = ColourEncoder()
    assert ColourEncoder().model_id == base.model_id
    variants = [{"hue_bins": 16}, {"sat_bins": 2}, {"val_bins": 4}, {"grey_bins": 7}, {"size": 112},
                {"levels": 16}, {"background_tolerance": (6, 16)}, {"grey_saturation": (0.1, 0.3)},
                {"min_foreground": 0.05}, {"min_background_border": 0.5}, {"power": 1.0}]
    ids = {base.model_id} | {ColourEncoder(**kw).model_id for kw in variants}  # type: ignore[arg-type]
    assert len(ids) == len(variants) + 1
    assert ColourEncoder(workers=1).model_id == base.model_id  # speed settings do not change vectors
    assert ColourEncoder(hue_bins=16, grey_bins=7).dim == 16 * 3 * 3 + 7


@pytest.mark.parametrize("kw", [{"hue_bins": 0}, {"levels": 64}, {"power": 0}, {"power": 2},
                                {"background_tolerance": (20, 10)}, {"grey_saturation": (0.2, 1.5)},
                                {"min_foreground": 1.0}, {"size": 4}, {"workers": 0}])
def test_bad_parameters_are_refused(kw: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        ColourEncoder(**kw)  # type: ignore[arg-type]


def test_vectors_do_not_depend_on_batching(enc: ColourEncoder, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    paths = [save(product(tuple(int(x) for x in rng.integers(0, 256, 3)), shape), tmp_path / f"{i}.jpg")
             for i, shape in enumerate(["shirt", "ellipse", "square"] * 3)]
    a, _ = enc.encode_with_failures(paths, batch_size=256, progress=False)
    b, _ = enc.encode_with_failures(paths, batch_size=2, progress=False, workers=1)
    np.testing.assert_allclose(a, b, atol=1e-6)
    with pytest.raises(ConfigError):
        enc.encode_with_failures(paths, batch_size=0, progress=False)


def reference_decode(path: str, size: int) -> np.ndarray:
    """The colour arm's decoding as it was written before the encoder joined ImageEncoder (one file, no pool)."""
    with Image.open(path) as f:
        if f.format == "JPEG":
            f.draft("RGB", (size, size))
        f.load()
        rgb = to_rgb(ImageOps.exif_transpose(f))
        if rgb.size != (size, size):
            rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(rgb, dtype=np.uint8)


def reference_vector(enc: ColourEncoder, image: np.ndarray) -> np.ndarray:
    """One image's vector pixel by pixel: the soft bins of each pixel's RGB-cube cell centre, weighted by
    the foreground mask, summed, normalised, raised to ``power``, unit length (no lookup table, no bincount)."""
    weights, _ = enc.foreground(image[None])
    step = 256 // enc.levels
    centres = (image.reshape(-1, 3) // step + 0.5) * step
    hist = (enc.bin_weights(centres).astype(np.float64) * weights.reshape(-1, 1)).sum(axis=0)
    v = (hist / hist.sum()) ** enc.power
    return v / np.linalg.norm(v)


@pytest.mark.parametrize("kw", [{}, {"size": 40, "levels": 16, "power": 1.0}])
def test_pipeline_matches_the_pre_refactor_computation(tmp_path: Path, kw: dict[str, object]) -> None:
    enc = ColourEncoder(**kw)  # type: ignore[arg-type]
    assert isinstance(enc, ImageEncoder) and enc.default_batch_size == 256
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: decoded upright
    paths = [save(product(RED), tmp_path / "red.jpg", quality=90),
             save(product(BLUE, "ellipse").resize((300, 120)), tmp_path / "wide.jpg", exif=exif),
             save(product(GREEN, mode="RGBA", background=(0, 0, 0, 0)), tmp_path / "alpha.png"),
             save(product(ORANGE, "square", size=41), tmp_path / "odd.png"),
             str(tmp_path / "absent.jpg"),
             save(product(DARK_RED).convert("L"), tmp_path / "grey.jpg")]
    vecs, fails = enc.encode_with_failures(paths, batch_size=4, progress=False, workers=2)
    assert list(fails) == [4]
    good = [p for i, p in enumerate(paths) if i not in fails]
    decoded = np.stack([reference_decode(p, enc.size) for p in good])
    np.testing.assert_array_equal(vecs[[0, 1, 2, 3, 5]], enc.encode_arrays(decoded))  # bit for bit
    assert not vecs[4].any()
    for row, image in zip(vecs[[0, 1, 2, 3, 5]], decoded):
        np.testing.assert_allclose(row, reference_vector(enc, image), atol=2e-6)


def test_model_id_of_stored_vectors_is_unchanged() -> None:
    # vectors in users' stores are keyed by this id: a change must be a deliberate FEATURE_VERSION bump
    assert ColourEncoder().model_id == ("colour-hist/hsv-v1-h12s3v3g5-px56-q32-bg4-12-sat0.05-0.2-fg0.01"
                                        "-border0.4-p0.5")


def test_soft_bins_are_a_distribution_and_hue_wraps_around(enc: ColourEncoder) -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (500, 3))
    w = enc.bin_weights(rgb)
    assert (w >= 0).all()
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-5)
    h, s, _ = rgb_to_hsv(np.array([[255, 0, 6], [255, 6, 0], [0, 0, 255], [128, 128, 128]]))
    assert h[0] > 0.99 and h[1] < 0.01 and h[2] == pytest.approx(2 / 3) and s[3] == 0
    near = enc.bin_weights(np.array([[255, 0, 6], [255, 6, 0]]))
    assert cos(near[0], near[1]) > 0.95  # hues just either side of red share their bins
    table = enc.bin_table()
    assert table.shape == (enc.levels**3, enc.dim)


def test_colour_arm_finds_same_coloured_products_on_the_real_sample(shared_data: Path) -> None:
    from prodrec import load_catalog
    from prodrec.evaluation.runs import evaluate
    from prodrec.rank.recommender import Recommender
    from prodrec.embed.vectors import Embeddings

    cat = load_catalog(shared_data).sample(500, seed=0)
    vecs, fails = ColourEncoder().encode_with_failures(cat.image_paths, progress=False)
    assert fails == {}
    rec = Recommender({"colour": Embeddings(np.array([str(i) for i in cat.ids]), vecs, {}, {})})
    res = evaluate(rec, cat, k=5, n_boot=200, progress=False, columns=["baseColour", "articleType"])
    p = res[res.metric == "precision"].set_index(["mode", "label"])
    colour, rnd = p.loc[("colour", "baseColour")], p.loc[("random", "baseColour")]
    # ~0.45 measured at n=500 against ~0.10 for random; the margin allows for a different sample draw
    assert colour["ci_low"] > 3 * rnd["value"]
    assert colour["value"] > 0.35
    assert p.loc[("colour", "articleType"), "value"] > p.loc[("random", "articleType"), "value"]
