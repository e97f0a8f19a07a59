"""Reading images of any mode as 8-bit RGB, with one clear error for a file that cannot be read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from tlcore.errors import DatasetError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}

ImageFile.LOAD_TRUNCATED_IMAGES = False


class BadImageError(DatasetError):
    """A file that exists but is not a readable image."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        super().__init__(
            f"Cannot read image {self.path}: {reason}. Fix or remove the file, or pass --skip-bad-images "
            "to skip unreadable images (they are counted in the run)."
        )


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode (L, LA, RGBA, P, I;16, I, F, CMYK, YCbCr...) to RGB.

    16-bit and float images are rescaled to 0..255 from their actual range; transparency is
    composited on black so a transparent background does not turn into noise.
    """
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        if img.mode.startswith("I;16"):
            a = a / 65535.0 * 255.0
        else:
            lo, hi = float(a.min()), float(a.max())
            a = (a - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(a)
        gray = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), mode="L")
        return gray.convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def read_image(path: str | Path) -> Image.Image:
    """Open and fully decode an image file as RGB; raise :class:`BadImageError` naming the file."""
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"Image file {p} does not exist; check the dataset folder and the split CSVs.")
    try:
        with Image.open(p) as img:
            img.load()
            return to_rgb(img)
    except UnidentifiedImageError:
        raise BadImageError(p, "not a recognised image format") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadImageError(p, str(exc) or type(exc).__name__) from None


def array_to_image(a: np.ndarray) -> Image.Image:
    """An in-memory array (H,W) or (H,W,C), any numeric range, as an RGB image."""
    a = np.asarray(a)
    if a.dtype != np.uint8:
        a = a.astype(np.float64)
        lo, hi = float(a.min()), float(a.max())
        if lo >= 0 and hi <= 1.0:
            a = a * 255.0
        elif hi > 255 or lo < 0:
            a = (a - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(a)
        a = np.clip(np.rint(a), 0, 255).astype(np.uint8)
    if a.ndim == 2:
        return Image.fromarray(a, mode="L").convert("RGB")
    if a.shape[2] == 1:
        return Image.fromarray(a[:, :, 0], mode="L").convert("RGB")
    if a.shape[2] == 4:
        return to_rgb(Image.fromarray(a, mode="RGBA"))
    return Image.fromarray(a[:, :, :3], mode="RGB")
