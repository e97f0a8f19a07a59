"""The input size a dataset's images call for: tiny images are not blown up to 224 px.

A backbone pretrained at 224 px is usually fed 224 px images, but 8x8 digits or 25x25 faces
upscaled 28x or 9x cost 12x the FLOPs of 64 px for nothing: on digits, feature extraction at
10 samples per class scored 91.3 % at 64 px and 85.2 % at 224 px (README, measured). So when the
images are at most :data:`TINY_IMAGE_MAX` px on their longer side, the default input size is
:data:`TINY_INPUT_SIZE`; anything larger keeps the backbone's own size. The user can always
choose (``--resolution``, the Run page's "Input size").
"""

from __future__ import annotations

import statistics

TINY_IMAGE_MAX = 64  # px, the longer side of the dataset's typical image
TINY_INPUT_SIZE = 64  # px, the default input size for such images
SAMPLE = 16  # images looked at to tell the typical size


def native_image_size(ds) -> int | None:
    """The longer side of the dataset's typical image (median over a few), or None if unknown.

    In-memory arrays are read from their shape; files from their headers (no decoding)."""
    from tlcore.data.datasets import ArraySource, FileSource, SubsetSource

    n = len(ds)
    if n == 0:
        return None
    source = ds.source
    picks = sorted({int(i) for i in range(0, n, max(1, n // SAMPLE))})[:SAMPLE]
    base, index = source, lambda i: i
    if isinstance(source, SubsetSource):
        base, index = source.base, (lambda i, idx=source.indices: int(idx[i]))
    sizes = []
    try:
        if isinstance(base, ArraySource):
            h, w = base.images.shape[1:3]
            return int(max(h, w))
        if isinstance(base, FileSource):
            from PIL import Image

            for i in picks:
                try:
                    with Image.open(base.paths[index(i)]) as img:  # reads the header only
                        sizes.append(max(img.size))
                except Exception:  # one unreadable file: the others still tell the size
                    continue
        else:
            sizes = [max(source.load(i).size) for i in picks[:4]]
    except Exception:  # an unreadable image: the method will say which; the size stays unknown here
        return None
    return int(statistics.median(sizes)) if sizes else None


def input_size_for(native: int | None, backbone_size: int) -> int:
    """The default input size for images of ``native`` px on a backbone pretrained at ``backbone_size``."""
    if native is not None and native <= TINY_IMAGE_MAX and backbone_size > TINY_INPUT_SIZE:
        return TINY_INPUT_SIZE
    return backbone_size
