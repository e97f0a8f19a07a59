"""The batched image pipeline: a batch fetched whole holds the same bytes as images fetched one by one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tlcore.data import scan_folder
from tlcore.data.images import BadImageError
from tlcore.data.loading import Batch, ImageBatches, Preprocessing, make_loader, resize_batch


def _mixed_folder(root):
    """Images of several sizes and modes, one of them already at the input size (32 px)."""
    rng = np.random.default_rng(0)
    shapes = [(32, 32), (17, 23), (64, 48), (32, 32), (8, 8), (17, 23), (100, 31)]
    for k, (h, w) in enumerate(shapes):
        folder = root / "train" / f"c{k % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        a = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        img = Image.fromarray(a, "RGB")
        img = img.convert(("RGB", "L", "RGBA", "P")[k % 4])
        img.save(folder / f"i{k}.png")
    return scan_folder(root)


def test_a_batch_fetched_whole_equals_the_images_fetched_one_by_one(tmp_path):
    ds = _mixed_folder(tmp_path / "mixed")
    images = ImageBatches(ds, np.arange(len(ds))[::-1], Preprocessing(32))
    whole = images.__getitems__(list(range(len(ds))))
    one_by_one = [images[k] for k in range(len(ds))]
    assert isinstance(whole, Batch) and whole.images.dtype == torch.uint8
    assert torch.equal(whole.images, torch.stack([x for x, _, _ in one_by_one]))
    assert whole.labels.tolist() == [y for _, y, _ in one_by_one]
    assert whole.indices.tolist() == [i for _, _, i in one_by_one]


def test_resizing_a_group_is_resizing_each_image():
    rng = np.random.default_rng(1)
    imgs = [torch.from_numpy(rng.integers(0, 256, size=(3, h, w), dtype=np.uint8)) for h, w in
            [(20, 20), (20, 20), (50, 40), (24, 24)]]
    single = Preprocessing(24).resize_transform()
    expected = torch.stack([single(Image.fromarray(i.permute(1, 2, 0).numpy())) for i in imgs])
    assert torch.equal(resize_batch(imgs, 24), expected)


def test_the_loader_skips_unreadable_files_in_a_batched_fetch(tmp_path):
    ds = _mixed_folder(tmp_path / "mixed")
    ds.source.paths[2].write_bytes(b"not a png")
    strict = make_loader(ImageBatches(ds, np.arange(len(ds)), Preprocessing(32)), batch_size=4, num_workers=0)
    with pytest.raises(BadImageError):
        list(strict)
    lenient = make_loader(ImageBatches(ds, np.arange(len(ds)), Preprocessing(32), skip_bad=True), batch_size=4,
                          num_workers=0)
    batches = list(lenient)
    assert [b.skipped for b in batches] == [[2], []]
    assert torch.cat([b.indices for b in batches]).tolist() == [0, 1, 3, 4, 5, 6]
    assert all(b.images.shape[1:] == (3, 32, 32) for b in batches)
