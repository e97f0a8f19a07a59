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


def _png_in_every_colour_type(root):
    """PNGs of each colour type and bit depth a folder dataset may hold, named by what they are."""
    rng = np.random.default_rng(2)
    a = rng.integers(0, 256, size=(9, 7, 4), dtype=np.uint8)
    rgb = Image.fromarray(a[..., :3])
    images = {
        "grey": (Image.fromarray(a[..., 0]), {}),
        "grey_1bit": (Image.fromarray(a[..., 0] > 128), {}),
        "grey_transparent": (Image.fromarray(a[..., 0]), {"transparency": 5}),
        "rgb": (rgb, {}),
        "rgb_interlaced": (rgb, {"interlace": 1}),
        "palette": (rgb.convert("P"), {}),
        "palette_transparent": (rgb.convert("P"), {"transparency": 0}),
        "grey_alpha": (rgb.convert("LA"), {}),
        "rgba": (Image.fromarray(a), {}),
        "grey_16bit": (Image.fromarray(a[..., 0].astype(np.uint16) * 257), {}),
    }
    root.mkdir()
    for name, (img, options) in images.items():
        img.save(root / f"{name}.png", **options)
    return {name: root / f"{name}.png" for name in images}


def test_pngs_read_as_tensors_hold_the_same_bytes_as_through_pil(tmp_path, monkeypatch):
    from torchvision.transforms.v2.functional import pil_to_tensor

    from tlcore.data import images as images_module
    from tlcore.data.images import read_image, read_image_uint8

    paths = _png_in_every_colour_type(tmp_path / "pngs")
    for name, path in paths.items():
        got = read_image_uint8(path)
        assert got.dtype == torch.uint8 and got.shape == (3, 9, 7), name
        assert torch.equal(got, pil_to_tensor(read_image(path))), name
    # grey, RGB and palette PNGs take the fast decoder, not PIL (the point of it)
    monkeypatch.setattr(images_module, "read_image", lambda p: pytest.fail(f"{p} went through PIL"))
    for name in ("grey", "grey_1bit", "grey_transparent", "rgb", "rgb_interlaced", "palette"):
        read_image_uint8(paths[name])


def test_a_truncated_png_read_as_a_tensor_is_the_same_error_naming_the_file(tmp_path):
    from tlcore.data.images import read_image_uint8

    path = _png_in_every_colour_type(tmp_path / "pngs")["rgb"]
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(BadImageError, match="truncated.png|rgb.png"):
        read_image_uint8(path)


def test_loaders_decode_in_process_on_the_cpu_and_in_workers_for_a_gpu(tmp_path, monkeypatch):
    from tlcore.data.loading import default_num_workers

    monkeypatch.setattr("os.cpu_count", lambda: 6)
    ds = _mixed_folder(tmp_path / "mixed")
    images = ImageBatches(ds, np.arange(len(ds)), Preprocessing(32))
    assert make_loader(images, batch_size=2, device=torch.device("cpu")).num_workers == 0
    assert make_loader(images, batch_size=2).num_workers == 0
    assert default_num_workers(torch.device("cuda")) == 3  # half of the (patched) 6 cores
