"""A training-free colour arm: the colour distribution of the product in each photo, as a vector.

What it sees
------------
The *foreground* colours of a product photo. The background colour is estimated from the photo's border
(the median border pixel; catalog photos put the product on a plain, usually white, backdrop) and every
pixel is weighted by how far it is from that colour (a soft ramp, so anti-aliased edges count a little).
The weighted pixels are binned in HSV: ``hue x saturation x value`` bins for coloured pixels, plus separate
*grey* bins (by value: black ... grey ... white) for pixels with little saturation, so that black, grey and
white products are told apart by brightness and never get an arbitrary hue. Binning is soft (hue linearly
interpolated around the circle, saturation and value along their axes, coloured vs grey by a saturation
ramp), so a colour on a bin edge does not flip between bins. The histogram is turned into its square root
(Hellinger), so cosine similarity between two vectors is the Bhattacharyya coefficient of the two colour
distributions, which keeps one dominant bin from drowning the rest.

What it cannot see
------------------
* **Patterns and texture**: stripes, checks and prints give the same vector as their colours mixed
  (a black-and-white stripe looks like half black, half white). Shape is ignored entirely.
* **Multi-colour products and "the" colour**: the vector is the whole product's colour mix; it cannot tell
  which part a person would name as the product's colour (the shirt, not the model's jeans, skin or hair;
  the shoe's upper, not its sole; the watch's dial, not its strap).
* **Non-plain backgrounds**: a background that is cluttered, a gradient, or the same colour as the product
  is counted as product. When the border has no dominant colour (fewer than ``min_background_border`` of
  its pixels near the median) the photo is taken as all foreground; when almost nothing differs from the
  background (a photo that is entirely background, or a white product on white showing no shading) the
  whole image is used instead of the foreground (``min_foreground``). Both cases still give a valid,
  non-zero vector.
* **Lighting and white balance**: colours are the camera's sRGB values, uncorrected; shadows and
  highlights shift value and saturation, and a colour cast shifts hue.

Speed comes from decoding JPEGs reduced (libjpeg's DCT scaling via ``Image.draft``: a 224x224 photo is
decoded straight to 56x56), decoding on the :class:`~prodrec.embed.encoders.base.ImageEncoder` thread pool
(Pillow releases the GIL), and one vectorised step
per batch: pixels are quantised to a ``levels^3`` RGB cube, each cube cell's soft bins are looked up in a
precomputed sparse table, and background pixels (weight 0) are skipped before counting.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from ...core.errors import ConfigError
from ...data.images import DEFAULT_MAX_PIXELS, ImageError, check_image_header, to_rgb
from .base import ImageEncoder

log = logging.getLogger(__name__)

#: Version of the feature definition; bump it when the computation changes in a way parameters do not show.
FEATURE_VERSION = "hsv-v1"

#: Images counted in one ``np.bincount`` (bounds the scratch arrays: pixels x K bins per chunk).
_COUNT_CHUNK = 64


def rgb_to_hsv(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hue, saturation and value in [0, 1] (hue 0 = red, 1/3 = green, 2/3 = blue) of uint8 or float
    0..255 RGB values ``[..., 3]``; grey pixels get hue 0 and saturation 0."""
    x = np.asarray(rgb, dtype=np.float32) / 255.0
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    mx = x.max(axis=-1)
    mn = x.min(axis=-1)
    d = mx - mn
    safe = np.where(d > 0, d, 1.0)
    h = np.where(mx == r, ((g - b) / safe) % 6.0, np.where(mx == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0))
    h = np.where(d > 0, h / 6.0, 0.0).astype(np.float32)
    s = np.where(mx > 0, d / np.maximum(mx, 1e-6), 0.0).astype(np.float32)
    return h, s, mx.astype(np.float32)


def _ramp(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """0 below ``lo``, 1 above ``hi``, linear between (a step when ``lo == hi``)."""
    if hi <= lo:
        return (x > lo).astype(np.float32)
    return np.clip((np.asarray(x, dtype=np.float32) - lo) / (hi - lo), 0.0, 1.0)


def _channel_distance(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Largest absolute channel difference (uint8) between uint8 RGB ``x [..., 3]`` and ``ref`` (broadcast)."""
    d = np.maximum(x, ref) - np.minimum(x, ref)
    return np.maximum(np.maximum(d[..., 0], d[..., 1]), d[..., 2])


def _linear_bins(x: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Soft assignment of values in [0, 1] to ``n`` bins centred at (i + 0.5) / n, clamped at the ends:
    (lower bin, upper bin, weight of the upper bin)."""
    f = np.clip(x * n - 0.5, 0.0, n - 1)
    i0 = np.floor(f).astype(np.int64)
    return i0, np.minimum(i0 + 1, n - 1), (f - i0).astype(np.float32)


class ColourEncoder(ImageEncoder):
    """Foreground colour histogram of each product photo (soft HSV bins + grey bins, square-rooted), unit norm.

    No model and no training: the vector depends only on the photo and the parameters below, all of which
    are part of :attr:`model_id`. See the module docstring for what the vector captures and what it misses.
    An :class:`~prodrec.embed.encoders.base.ImageEncoder`: it supplies its decoding (:meth:`load`) and its
    histogram maths (:meth:`_forward`); batching, the decoding threads and failures are the base class's.

    Parameters
    ----------
    hue_bins, sat_bins, val_bins : int
        Bins for coloured pixels along hue (circular), saturation and value.
    grey_bins : int
        Bins, by value from black to white, for pixels with little saturation.
    size : int
        Photos are decoded to ``size x size`` pixels (JPEGs reduced in the decoder) before counting; the
        aspect change of non-square photos does not change colour proportions.
    background_tolerance : (float, float)
        A pixel whose largest channel difference from the background colour is at most the first value is
        background (weight 0), at least the second is foreground (weight 1), linear between.
    grey_saturation : (float, float)
        Saturation at or below the first value counts as grey, at or above the second as coloured, with a
        linear blend between.
    min_foreground : float
        When the foreground weight is below this share of the image, the whole image is used instead.
    min_background_border : float
        The border colour is taken as background only when at least this share of border pixels lie within
        ``background_tolerance[1]`` of it; otherwise the whole image is foreground.
    levels : int
        Quantisation of each RGB channel before binning (8, 16 or 32; the cube-to-bin table has
        ``levels**3`` rows).
    power : float
        Exponent applied to the normalised histogram before L2 normalisation (0.5: Hellinger; 1: raw).
    workers : int or None
        Decoding threads (default: between 2 and 8, from the CPU count).
    max_pixels : int
        Declared image sizes above this are refused as failures (decompression-bomb guard).
    choice_reason : str
        Why this encoder was chosen, for provenance.
    """

    name: str = "colour-hist"
    #: Images per vectorised step (the cost per image is flat above ~64).
    default_batch_size: int = 256

    def __init__(
        self,
        *,
        hue_bins: int = 12,
        sat_bins: int = 3,
        val_bins: int = 3,
        grey_bins: int = 5,
        size: int = 56,
        background_tolerance: tuple[float, float] = (4.0, 12.0),
        grey_saturation: tuple[float, float] = (0.05, 0.2),
        min_foreground: float = 0.01,
        min_background_border: float = 0.4,
        levels: int = 32,
        power: float = 0.5,
        workers: int | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        choice_reason: str = "training-free colour arm: foreground colour histogram (no model weights)",
    ) -> None:
        for label, value, low in (("hue_bins", hue_bins, 1), ("sat_bins", sat_bins, 1), ("val_bins", val_bins, 1),
                                  ("grey_bins", grey_bins, 1), ("size", size, 8)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
                raise ConfigError(f"{label} must be an integer >= {low}, got {value!r}")
        if levels not in (8, 16, 32):
            raise ConfigError(f"levels must be 8, 16 or 32, got {levels!r}")
        lo, hi = (float(v) for v in background_tolerance)
        if not 0 <= lo <= hi <= 255:
            raise ConfigError(f"background_tolerance must be (low, high) with 0 <= low <= high <= 255, "
                              f"got {background_tolerance!r}")
        s_lo, s_hi = (float(v) for v in grey_saturation)
        if not 0 <= s_lo <= s_hi <= 1:
            raise ConfigError(f"grey_saturation must be (low, high) with 0 <= low <= high <= 1, got {grey_saturation!r}")
        if not 0 <= min_foreground < 1:
            raise ConfigError(f"min_foreground must be in [0, 1), got {min_foreground!r}")
        if not 0 < min_background_border <= 1:
            raise ConfigError(f"min_background_border must be in (0, 1], got {min_background_border!r}")
        if not 0 < power <= 1:
            raise ConfigError(f"power must be in (0, 1], got {power!r}")
        super().__init__(workers=workers)
        self.hue_bins, self.sat_bins, self.val_bins, self.grey_bins = int(hue_bins), int(sat_bins), int(val_bins), int(grey_bins)
        self.size = int(size)
        self.background_tolerance = (lo, hi)
        self.grey_saturation = (s_lo, s_hi)
        self.min_foreground = float(min_foreground)
        self.min_background_border = float(min_background_border)
        self.levels = int(levels)
        self.power = float(power)
        self.max_pixels = int(max_pixels)
        self.dim = self.hue_bins * self.sat_bins * self.val_bins + self.grey_bins
        self.weights = "none"
        self.weight_source = "training-free"
        self.choice_reason = choice_reason
        self.input_size = self.size
        table = self.bin_table()
        # the table as a sparse lookup: each cube cell's (at most K) non-zero bins and their weights
        k = int((table > 0).sum(axis=1).max())
        self._lut_bins = np.argsort(-table, axis=1, kind="stable")[:, :k].astype(np.int32)
        self._lut_weights = np.take_along_axis(table, self._lut_bins, axis=1)

    # -- identity -------------------------------------------------------------------------------------------

    @property
    def model_id(self) -> str:
        """Every parameter that changes vectors, so stored vectors are reused only when they would be equal."""
        def g(x: float) -> str:
            return f"{x:g}"

        return (f"{self.name}/{FEATURE_VERSION}-h{self.hue_bins}s{self.sat_bins}v{self.val_bins}g{self.grey_bins}"
                f"-px{self.size}-q{self.levels}-bg{g(self.background_tolerance[0])}-{g(self.background_tolerance[1])}"
                f"-sat{g(self.grey_saturation[0])}-{g(self.grey_saturation[1])}-fg{g(self.min_foreground)}"
                f"-border{g(self.min_background_border)}-p{g(self.power)}")

    @property
    def preprocessing(self) -> str:
        return (f"decoded to {self.size}x{self.size} RGB (JPEG DCT-scaled); background = median border colour, "
                f"soft foreground mask; soft HSV {self.hue_bins}x{self.sat_bins}x{self.val_bins} + {self.grey_bins} "
                f"grey bins; histogram^{self.power:g}, L2")

    def describe(self) -> dict[str, Any]:
        """Provenance record: :meth:`ImageEncoder.describe` plus the preprocessing and the parameters."""
        return {
            **super().describe(),
            "preprocessing": self.preprocessing,
            "params": {
                "hue_bins": self.hue_bins, "sat_bins": self.sat_bins, "val_bins": self.val_bins,
                "grey_bins": self.grey_bins, "size": self.size, "levels": self.levels,
                "background_tolerance": list(self.background_tolerance),
                "grey_saturation": list(self.grey_saturation), "min_foreground": self.min_foreground,
                "min_background_border": self.min_background_border, "power": self.power,
            },
        }

    def __repr__(self) -> str:
        return f"ColourEncoder({self.model_id!r}, dim={self.dim})"

    # -- the colour model -----------------------------------------------------------------------------------

    def bin_weights(self, rgb: np.ndarray) -> np.ndarray:
        """Soft bin memberships ``float32 [m, dim]`` (rows sum to 1) of ``m`` RGB colours ``[m, 3]`` (0..255).

        Columns are ``(hue, sat, val)`` bins in C order, then the grey bins from black to white.
        """
        rgb = np.asarray(rgb, dtype=np.float32).reshape(-1, 3)
        m = len(rgb)
        h, s, v = rgb_to_hsv(rgb)
        coloured = _ramp(s, *self.grey_saturation)
        hb, sb, vb, gb = self.hue_bins, self.sat_bins, self.val_bins, self.grey_bins
        out = np.zeros((m, self.dim), dtype=np.float32)
        rows = np.arange(m)
        # hue: circular linear interpolation between bin centres (i + 0.5) / hb
        hf = h * hb - 0.5
        h0 = np.floor(hf)
        ht = (hf - h0).astype(np.float32)
        h0 = h0.astype(np.int64) % hb
        h1 = (h0 + 1) % hb
        s0, s1, st = _linear_bins(s, sb)
        v0, v1, vt = _linear_bins(v, vb)
        for hi, hw in ((h0, 1 - ht), (h1, ht)):
            for si, sw in ((s0, 1 - st), (s1, st)):
                for vi, vw in ((v0, 1 - vt), (v1, vt)):
                    np.add.at(out, (rows, (hi * sb + si) * vb + vi), coloured * hw * sw * vw)
        g0, g1, gt = _linear_bins(v, gb)
        base = hb * sb * vb
        np.add.at(out, (rows, base + g0), (1 - coloured) * (1 - gt))
        np.add.at(out, (rows, base + g1), (1 - coloured) * gt)
        return out

    def bin_table(self) -> np.ndarray:
        """``float32 [levels**3, dim]``: the soft bins of the centre colour of each cell of the RGB cube."""
        q = self.levels
        centre = (np.arange(q, dtype=np.float32) + 0.5) * (256.0 / q)
        r, g, b = np.meshgrid(centre, centre, centre, indexing="ij")
        return self.bin_weights(np.stack([r, g, b], axis=-1).reshape(-1, 3))

    def foreground(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-pixel foreground weights ``float32 [n, H, W]`` in [0, 1] of uint8 RGB images ``[n, H, W, 3]``,
        and which images fell back to the whole image (bool ``[n]``: no plain background found, or too
        little foreground)."""
        batch = np.asarray(batch)
        if batch.ndim != 4 or batch.shape[-1] != 3 or batch.dtype != np.uint8:
            raise ValueError(f"expected uint8 RGB images [n, H, W, 3], got {batch.dtype} {batch.shape}")
        _, H, W, _ = batch.shape
        if H < 2 or W < 2:
            raise ValueError(f"images must be at least 2x2 pixels, got {H}x{W}")
        lo, hi = self.background_tolerance
        border = np.concatenate([batch[:, 0], batch[:, -1], batch[:, 1:-1, 0], batch[:, 1:-1, -1]], axis=1)
        bg = np.median(border, axis=1).astype(np.uint8)  # [n, 3]
        plain = (_channel_distance(border, bg[:, None, :]) <= hi).mean(axis=1) >= self.min_background_border
        w = _ramp(_channel_distance(batch, bg[:, None, None, :]), lo, hi)
        whole = ~plain | (w.mean(axis=(1, 2)) < self.min_foreground)
        w[whole] = 1.0
        return w, whole

    def histograms(self, batch: np.ndarray) -> np.ndarray:
        """Foreground-weighted soft-bin histograms ``float32 [n, dim]`` (rows sum to 1) of uint8 RGB images."""
        w, _ = self.foreground(batch)
        n = len(batch)
        q, dim = self.levels, self.dim
        shift = 8 - int(np.log2(q))
        cells = batch >> shift
        cell = ((cells[..., 0].astype(np.int32) * q + cells[..., 1]) * q + cells[..., 2]).reshape(n, -1)
        w = w.reshape(n, -1)
        out = np.empty((n, dim), dtype=np.float32)
        for s in range(0, n, _COUNT_CHUNK):
            ws = w[s : s + _COUNT_CHUNK]
            m = len(ws)
            img, pix = np.nonzero(ws)  # background pixels (weight 0) cost nothing
            c = cell[s : s + m][img, pix]
            bins = self._lut_bins[c] + (img.astype(np.int32) * dim)[:, None]  # [pixels, K]
            vals = self._lut_weights[c] * ws[img, pix][:, None]
            out[s : s + m] = np.bincount(bins.ravel(), weights=vals.ravel(), minlength=m * dim).reshape(m, dim)
        return out / np.maximum(out.sum(axis=1, keepdims=True), 1e-12)

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        """Histograms to the power :attr:`power` (not yet unit norm) of uint8 RGB images ``[n, H, W, 3]``;
        :meth:`encode_arrays` gives the unit vectors."""
        hist = self.histograms(batch)
        return hist if self.power == 1.0 else hist**self.power

    # -- files ----------------------------------------------------------------------------------------------

    def load(self, path: str) -> np.ndarray:
        """Decode ``path`` to uint8 RGB ``[size, size, 3]`` (EXIF-rotated, alpha on white); raises
        :class:`~prodrec.data.images.ImageError` for missing, empty, corrupt, unidentifiable or oversized files."""
        path = os.fspath(path)
        check_image_header(path, max_pixels=self.max_pixels)
        target = (self.size, self.size)
        try:
            with Image.open(path) as f:
                if f.format == "JPEG":
                    f.draft("RGB", target)  # libjpeg decodes at 1/2, 1/4 or 1/8 scale, never below target
                f.load()
                rgb = to_rgb(ImageOps.exif_transpose(f))
                if rgb.size != target:
                    rgb = rgb.resize(target, Image.Resampling.BILINEAR)
                return np.asarray(rgb, dtype=np.uint8)
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageError(path, f"cannot decode: {exc}") from None
