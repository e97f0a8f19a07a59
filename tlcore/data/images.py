"""Reading images of any mode as 8-bit RGB, with one clear error for a file that cannot be read."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from tlcore.errors import DatasetError

if TYPE_CHECKING:
    import torch

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


def image_to_uint8(img: Image.Image) -> torch.Tensor:
    """An RGB PIL image as a uint8 (3,H,W) tensor."""
    from torchvision.transforms.v2.functional import pil_to_tensor

    return pil_to_tensor(img)


def read_image_uint8(path: str | Path) -> torch.Tensor:
    """The pixels of :func:`read_image` as a uint8 (3,H,W) tensor, the same bytes.

    Why: at 32 px, opening a file through PIL cost a third of the network's forward. PNGs are decoded
    by TorchCodec's libpng decoder instead, in a third of the time. What it would convert by other rules than
    :func:`to_rgb` (alpha, 16-bit samples) and any file it refuses go through :func:`read_image`,
    which also words the errors.
    """
    name = str(path)
    if name[-4:].lower() == ".png":
        import torch
        from torchcodec.decoders import decode_png

        try:
            with open(name, "rb") as f:
                data = torch.frombuffer(bytearray(f.read()), dtype=torch.uint8)  # writable: frombuffer does not warn
            # UNCHANGED: grey stays 1 channel, palettes become RGB(A); "auto" keeps 16-bit samples as uint16
            pixels = decode_png(data, mode="UNCHANGED", output_dtype="auto")
        except (RuntimeError, OSError, ValueError):
            pixels = None  # missing, corrupt, truncated or not a PNG: read_image says which
        if pixels is not None and pixels.dtype == torch.uint8 and pixels.shape[0] in (1, 3):
            return pixels.expand(3, -1, -1).contiguous() if pixels.shape[0] == 1 else pixels
    return image_to_uint8(read_image(path))


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
