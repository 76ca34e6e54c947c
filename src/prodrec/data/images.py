"""Image decoding that survives real catalogs: any PIL mode to RGB, EXIF rotation, bomb guard.

Every encoder decodes through :func:`load_rgb`, so a grayscale, CMYK, RGBA, palette, 16-bit or rotated
photo reaches the model as the same 8-bit RGB picture a person sees.
"""

from __future__ import annotations

import io
import os
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: Declared sizes above this are refused before decoding (a 20000x20000 "bomb" would need 1.2 GB).
DEFAULT_MAX_PIXELS = 40_000_000


class ImageError(ValueError):
    """An image file that cannot be used; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


#: File extensions of the formats PIL names (for files written by format, e.g. the image cache).
EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tif",
              "MPO": "jpg", "ICO": "ico"}


def _inspect(source: str | io.BytesIO, name: str, max_pixels: int, decode: bool) -> tuple[int, int, str]:
    """Open ``source`` (a path or bytes), check its declared size, decode it fully when ``decode``; return
    (width, height, PIL format) or raise :class:`ImageError` naming ``name``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as im:
                w, h = im.size
                fmt = str(im.format or "")
                if w * h > max_pixels:
                    raise ImageError(name, f"declared size {w}x{h} = {w * h / 1e6:.0f} MP exceeds the limit of "
                                           f"{max_pixels / 1e6:.0f} MP")
                if decode:
                    im.load()
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(name, f"refused as a decompression bomb ({exc})") from None
    except UnidentifiedImageError:
        raise ImageError(name, "not an image file PIL can identify") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(name, f"{'cannot decode' if decode else 'cannot open'}: {exc}") from None
    return w, h, fmt


def check_image_header(path: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """Open only the header of ``path``; return (width, height) or raise :class:`ImageError`."""
    try:
        empty = os.path.getsize(path) == 0
    except OSError as exc:
        raise ImageError(path, f"cannot open: {exc}") from None
    if empty:
        raise ImageError(path, "empty file (0 bytes)")
    w, h, _ = _inspect(path, path, max_pixels, decode=False)
    return w, h


def check_image_bytes(data: bytes, name: str = "image", max_pixels: int = DEFAULT_MAX_PIXELS) -> str:
    """Decode ``data`` fully (a truncated or damaged image fails here, not later); return the file
    extension of its format (``jpg``, ``png``...) or raise :class:`ImageError` naming ``name``."""
    if not data:
        raise ImageError(name, "empty body (0 bytes)")
    _, _, fmt = _inspect(io.BytesIO(data), name, max_pixels, decode=True)
    return EXTENSIONS.get(fmt, fmt.lower() or "img")


def to_rgb(im: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Convert any PIL image to 8-bit RGB: alpha composited on white, 16-bit scaled, CMYK converted."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if im.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        arr = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        base = Image.new("RGB", rgba.size, background)
        base.paste(rgba, mask=rgba.getchannel("A"))
        return base
    if im.mode != "RGB":
        return im.convert("RGB")
    return im


def load_rgb(path: str, size: int | tuple[int, int] = 224, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode ``path`` to a uint8 array [H, W, 3] resized to ``size`` (bilinear), EXIF-rotated.

    Raises :class:`ImageError` (never a bare PIL error) for empty, truncated, unidentifiable or bomb files.
    """
    w, h = check_image_header(path, max_pixels=max_pixels)
    target = (size, size) if isinstance(size, int) else tuple(size)
    try:
        with Image.open(path) as im:
            if im.format == "JPEG" and min(w, h) >= 2 * min(target):
                im.draft("RGB", (target[0] * 2, target[1] * 2))  # cheap DCT downscale for big JPEGs
            im.load()
            im = ImageOps.exif_transpose(im)
            im = to_rgb(im)
            if im.size != target:
                im = im.resize(target, Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(path, f"cannot decode: {exc}") from None
