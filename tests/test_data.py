"""Datasets: embedded, folders with seed CSVs, generated splits, class filters, bad files, image modes, crops."""

from __future__ import annotations

import csv
import io
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from tlcore.data import (
    SplitOverlapWarning,
    generate_splits,
    load_dataset,
    load_split_csvs,
    resolve_splits,
    scan_folder,
    split_class_filter,
    to_rgb,
    write_split_csvs,
)
from tlcore.data.images import BadImageError, read_image
from tlcore.data.loading import ImageBatches, Preprocessing, make_loader, normalize_batch
from tlcore.errors import DatasetError

# -- embedded --------------------------------------------------------------------------------------


def test_digits_and_lfw_are_real_labelled_images():
    d = load_dataset("digits")
    assert len(d) == 1797 and d.num_classes == 10
    img = d.source.load(0)
    assert img.mode == "RGB" and img.size == (8, 8)
    assert np.asarray(img).max() > 200  # 0..16 rescaled to 0..255, not left dark
    faces = load_dataset("lfw_faces")
    assert len(faces) == 200 and faces.classes == ["face", "non_face"]
    assert faces.class_counts().tolist() == [100, 100]


# -- class filters ---------------------------------------------------------------------------------


def test_class_filter_ranges_lists_and_names_reindex_from_zero():
    low = load_dataset("digits:0-4")
    high = load_dataset("digits:5-9")
    assert low.classes == ["0", "1", "2", "3", "4"] and high.classes == ["5", "6", "7", "8", "9"]
    assert set(np.unique(high.labels)) == {0, 1, 2, 3, 4}
    assert len(low) + len(high) == 1797
    picked = load_dataset("digits:7,2")
    assert picked.classes == ["7", "2"]
    assert np.asarray(picked.source.load(int(np.flatnonzero(picked.labels == 0)[0]))).size > 0
    assert load_dataset("lfw_faces:non_face,face").classes == ["non_face", "face"]


@pytest.mark.parametrize("name, fragment", [
    ("digits:3-12", "out of range"),
    ("digits:4-1", "backwards"),
    ("digits:cat", "not in dataset"),
    ("digits:3", "at least two classes"),
])
def test_class_filter_errors_say_what_is_wrong(name, fragment):
    with pytest.raises(DatasetError, match=fragment):
        load_dataset(name)


def test_windows_drive_letter_is_not_a_class_filter():
    assert split_class_filter("C:\\data\\birds") == ("C:\\data\\birds", None)
    assert split_class_filter("digits:0-4") == ("digits", "0-4")


def test_unknown_dataset_names_the_choices():
    with pytest.raises(DatasetError, match="neither a registered name"):
        load_dataset("no_such_dataset_here")


def test_torchvision_dataset_offline_says_where_files_were_expected(tmp_path):
    with pytest.raises(DatasetError, match=r"cifar10 was not found in .*cifar-10-batches-py.*--download"):
        load_dataset("cifar10", data_dir=tmp_path)


# -- generated splits ------------------------------------------------------------------------------


def test_generated_splits_are_stratified_disjoint_and_seeded():
    ds = load_dataset("digits:0-4")
    s = generate_splits(ds, seed=3)
    assert s.spc_values[:6] == [1, 2, 3, 5, 7, 10]
    largest = s.largest_spc
    assert all(s.draws(v) == 5 for v in s.spc_values if v != largest) and s.draws(largest) == 1
    for spc in s.spc_values:
        for draw in s.train[spc]:
            assert ds.class_counts(draw).tolist() == [spc] * 5
            assert not set(draw) & set(s.val) and not set(draw) & set(s.test)
    assert not set(s.val) & set(s.test)
    again = generate_splits(ds, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(s.train[5], again.train[5], strict=True))
    other = generate_splits(ds, seed=4)
    assert not np.array_equal(s.train[5][0], other.train[5][0])
    assert not np.array_equal(s.train[5][0], s.train[5][1])  # draws differ


def test_samples_per_class_larger_than_a_class_is_refused_with_the_limit():
    ds = load_dataset("lfw_faces")
    with pytest.raises(DatasetError, match=r"500 samples per class is more than .* use at most \d+"):
        generate_splits(ds, spc_values=[5, 500])


def _tiny(counts: list[int]):
    """A dataset of classes of the given sizes, no partition of its own (made-up 4x4 images, distinct)."""
    from tlcore.data.sources import ArraySource, ImageDataset

    labels = np.repeat(np.arange(len(counts)), counts)
    images = np.zeros((len(labels), 4, 4), dtype=np.uint8)
    images[:, 0, 0] = np.arange(len(labels))
    return ImageDataset("tiny", [f"c{i}" for i in range(len(counts))], ArraySource(images, "tiny"), labels)


def test_generated_splits_of_tiny_classes_worked_by_hand():
    # test: round(0.3 n) kept within [1, n - 1]: sizes 2, 3, 4, 10 give 1, 1, 1, 3; a class of 1 image gives none
    s = generate_splits(_tiny([2, 3, 4, 10, 1]), seed=0)
    assert np.bincount(_tiny([2, 3, 4, 10, 1]).labels[s.test], minlength=5).tolist() == [1, 1, 1, 3, 0]
    # val: min(10, max(smallest left // 3, 1 if it is >= 2 else 0)) per class; the smallest left is 1: no val
    assert len(s.val) == 0
    assert s.spc_values == [1] and s.largest_spc == 1 and s.draws(1) == 1
    # sizes 7 and 9: test 2 and 3 (round(2.1), round(2.7)); left 5 and 6: 1 val image each; 4 and 5 to train
    ds = _tiny([7, 9])
    s = generate_splits(ds, seed=0)
    assert ds.class_counts(s.test).tolist() == [2, 3] and ds.class_counts(s.val).tolist() == [1, 1]
    assert s.largest_spc == 4 and s.spc_values == [1, 2, 3, 4]
    assert all(s.draws(v) == 5 for v in (1, 2, 3)) and s.draws(4) == 1
    # 12 and 40: left 8 and 28, 8 // 3 = 2 val images a class
    ds = _tiny([12, 40])
    assert ds.class_counts(generate_splits(ds, seed=0).val).tolist() == [2, 2]
    # the clamps bind at other test fractions: at least 1 test image (0.1 x 4 rounds to 0), at most n - 1 (0.9 x 2)
    ds = _tiny([4, 30])
    assert ds.class_counts(generate_splits(ds, seed=0, test_fraction=0.1).test).tolist() == [1, 3]
    ds = _tiny([2, 20])
    assert ds.class_counts(generate_splits(ds, seed=0, test_fraction=0.9).test).tolist() == [1, 18]


def test_generated_splits_name_every_class_left_without_training_images():
    with pytest.raises(DatasetError) as caught:
        generate_splits(_tiny([3, 0, 0]), seed=0)
    assert str(caught.value) == ("Class(es) c1, c2 of tiny have no images left for training after val and test; "
                                 "add images or drop those classes with a class filter.")


def test_a_split_that_does_not_exist_is_one_sentence_listing_the_split_set():
    s = generate_splits(_tiny([7, 9]), seed=0)
    assert np.array_equal(s.train_split(4), s.train[4][0]) and np.array_equal(s.train_split(2, 3), s.train[2][3])
    with pytest.raises(DatasetError) as caught:
        s.train_split(2, 5)
    assert str(caught.value) == ("No training split for 2 samples per class, draw 5; this split set has: 1 (5 draws), "
                                 "2 (5 draws), 3 (5 draws), 4 (1 draws).")
    with pytest.raises(DatasetError, match="No training split for 9 samples per class, draw 0"):
        s.train_split(9)


def test_folder_partition_keeps_its_test_set(digits_folder):
    ds = scan_folder(digits_folder)
    assert ds.classes == ["digit0", "digit1", "digit2"] and ds.kind == "folder"
    s = generate_splits(ds, seed=0)
    assert set(ds.partition[s.test]) == {"test"} and len(s.test) == 24
    assert set(ds.partition[s.val]) == {"val"}
    assert s.largest_spc == 20 and s.draws(20) == 1


# -- seed CSVs -------------------------------------------------------------------------------------


def test_written_csvs_have_the_seed_format_and_load_back(digits_folder, tmp_path):
    ds = scan_folder(digits_folder)
    s = generate_splits(ds, seed=1, spc_values=[1, 5])
    out = tmp_path / "splits"
    files = {p.name for p in write_split_csvs(ds, s, out)}
    assert {"all_images.csv", "val.csv", "test.csv", "train_samples_01_split_0.csv",
            "train_samples_05_split_4.csv"} <= files
    row = next(csv.reader(open(out / "train_samples_05_split_0.csv")))
    assert len(row) == 4 and row[0].startswith("digits3/train/") and row[1] == "train"
    assert row[2] == row[0].split("/")[-1] and row[3].startswith("digit")
    back = load_split_csvs(scan_folder(digits_folder), out)
    assert back.spc_values == [1, 5] and back.draws(5) == 5
    assert np.array_equal(np.sort(back.train[5][2]), np.sort(s.train[5][2]))
    assert back.warnings == []


def test_csv_paths_resolve_against_root_parent_or_absolute(digits_folder, tmp_path):
    ds = scan_folder(digits_folder)
    files = [ds.source.paths[i] for i in range(len(ds))]
    out = tmp_path / "splits"
    out.mkdir()

    def write(name, paths, style):
        with open(out / name, "w", newline="") as f:
            for p in paths:
                rel = {"parent": f"digits3/{p.relative_to(digits_folder).as_posix()}",
                       "root": p.relative_to(digits_folder).as_posix(), "abs": str(p)}[style]
                csv.writer(f).writerow([rel, p.parts[-3], p.name, p.parts[-2]])

    val = [p for p in files if p.parts[-3] == "val"]
    test = [p for p in files if p.parts[-3] == "test"]
    train = [p for p in files if p.parts[-3] == "train"][:9]
    write("val.csv", val, "parent")
    write("test.csv", test, "root")
    write("train_samples_03_split_0.csv", train, "abs")
    s = load_split_csvs(ds, out)
    assert len(s.val) == len(val) and len(s.test) == len(test) and len(s.train[3][0]) == 9


def test_overlapping_csvs_warn_and_missing_files_are_errors_naming_them(digits_folder, tmp_path):
    ds = scan_folder(digits_folder)
    s = generate_splits(ds, seed=0, spc_values=[2])
    out = tmp_path / "splits"
    write_split_csvs(ds, s, out)
    # leak a test image into a training split, as the seed's CUB200 test.csv did
    test_row = next(csv.reader(open(out / "test.csv")))
    with open(out / "train_samples_02_split_0.csv", "a", newline="") as f:
        csv.writer(f).writerow(test_row)
    with pytest.warns(SplitOverlapWarning, match="1 image\\(s\\) are in both train and test"):
        loaded = load_split_csvs(scan_folder(digits_folder), out)
    assert loaded.warnings
    with open(out / "val.csv", "a", newline="") as f:
        csv.writer(f).writerow(["digits3/val/digit0/ghost.png", "val", "ghost.png", "digit0"])
    with pytest.raises(DatasetError, match="ghost.png"):
        load_split_csvs(scan_folder(digits_folder), out)


def test_unknown_label_in_csv_is_an_error(digits_folder, tmp_path):
    ds = scan_folder(digits_folder)
    out = tmp_path / "splits"
    write_split_csvs(ds, generate_splits(ds, spc_values=[1]), out)
    with open(out / "test.csv", "a", newline="") as f:
        csv.writer(f).writerow(["digits3/test/digit0/x.png", "test", "x.png", "zebra"])
    with pytest.raises(DatasetError, match="'zebra'"):
        load_split_csvs(scan_folder(digits_folder), out)


def test_resolve_splits_prefers_csvs_in_the_dataset_folder(digits_folder_copy):
    ds = scan_folder(digits_folder_copy)
    write_split_csvs(ds, generate_splits(ds, seed=5, spc_values=[2, 3]), digits_folder_copy / "splits")
    s = resolve_splits(scan_folder(digits_folder_copy), n_splits=2)
    assert s.origin.startswith("csv:") and s.spc_values == [2, 3] and s.draws(2) == 2
    with pytest.raises(DatasetError, match="no file for 7 samples per class"):
        resolve_splits(scan_folder(digits_folder_copy), spc_values=[7])


# -- images ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "CMYK", "LA", "I", "F"])
def test_every_image_mode_becomes_rgb(tmp_path, mode):
    base = Image.fromarray((np.arange(64 * 64).reshape(64, 64) % 256).astype(np.uint8), "L")
    if mode == "I;16":
        img = Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16))
        assert img.mode.startswith("I;16")
    elif mode == "P":
        img = base.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE)
    else:
        img = base.convert(mode)
    ext = {"CMYK": ".jpg", "I": ".tif", "F": ".tif"}.get(mode, ".png")
    path = tmp_path / f"x{ext}"
    img.save(path)
    out = read_image(path)
    assert out.mode == "RGB" and out.size == (64, 64)
    assert np.asarray(out).std() > 0  # content survived, not a blank image
    assert to_rgb(img).mode == "RGB"


def test_corrupt_image_error_names_the_file(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    with pytest.raises(BadImageError, match="broken.jpg.*--skip-bad-images"):
        read_image(bad)


def test_bad_images_fail_the_loader_or_are_skipped_and_counted(digits_folder_copy):
    victim = sorted((digits_folder_copy / "train" / "digit1").iterdir())[0]
    victim.write_bytes(b"garbage")
    ds = scan_folder(digits_folder_copy)
    prep = Preprocessing(32)
    strict = make_loader(ImageBatches(ds, np.arange(len(ds)), prep), batch_size=16, num_workers=0)
    with pytest.raises(BadImageError, match=victim.name):
        list(strict)
    lenient = make_loader(ImageBatches(ds, np.arange(len(ds)), prep, skip_bad=True), batch_size=16, num_workers=0)
    batches = list(lenient)
    assert sum(len(b.skipped) for b in batches) == 1
    assert sum(len(b.labels) for b in batches) == len(ds) - 1


# -- batches and crops -----------------------------------------------------------------------------


def test_batches_are_uint8_at_input_size_and_normalised_on_device():
    ds = load_dataset("digits:0-2")
    prep = Preprocessing(40, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    batch = next(iter(make_loader(ImageBatches(ds, np.arange(10), prep), batch_size=10, num_workers=0)))
    assert batch.images.dtype == torch.uint8 and batch.images.shape == (10, 3, 40, 40)
    x = normalize_batch(batch.images, prep, torch.device("cpu"), channels_last=True)
    assert x.dtype == torch.float32 and -1.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert x.is_contiguous(memory_format=torch.channels_last)


def test_ten_crops_on_the_fly_are_corners_centre_and_mirrors():
    ds = load_dataset("lfw_faces")
    item = ImageBatches(ds, np.arange(2), Preprocessing(28), crops=True)[0][0]  # 32 px image, 28 px crops
    assert item.shape == (10, 3, 28, 28)
    assert torch.equal(item[9], item[4].flip(-1))  # mirrored centre
    assert torch.equal(item[5], item[1].flip(-1))  # the mirror's top-left is the top-right, mirrored
    assert len({tuple(c.flatten()[:50].tolist()) for c in item}) == 10  # ten distinct views


def test_precomputed_crops_follow_the_seed_naming(digits_folder, tmp_path):
    ds = scan_folder(digits_folder)
    crops = tmp_path / "crops"
    idx = 0
    src = ds.source.paths[idx]
    rel = src.relative_to(digits_folder)
    (crops / rel.parent).mkdir(parents=True)
    for i in range(10):
        Image.new("RGB", (12, 12), (i * 20, 0, 0)).save(crops / rel.parent / f"{src.stem}_crop_{i}{src.suffix}")
    item = ImageBatches(ds, np.array([idx]), Preprocessing(16), precomputed_crops=crops)[0][0]
    assert item.shape == (10, 3, 16, 16)
    assert [int(item[i, 0, 0, 0]) for i in range(10)] == [i * 20 for i in range(10)]
    other = ImageBatches(ds, np.array([1]), Preprocessing(16), precomputed_crops=crops)
    with pytest.raises(DatasetError, match="Expected 10 precomputed crops"):
        other[0]


def test_folder_without_images_is_one_sentence(tmp_path):
    (tmp_path / "empty" / "train" / "cat").mkdir(parents=True)
    with pytest.raises(DatasetError, match="No images found"):
        scan_folder(tmp_path / "empty")


def test_imagefolder_layout_without_splits_is_accepted(tmp_path, digits_folder):
    flat = tmp_path / "flat"
    for p in (digits_folder / "train").iterdir():
        shutil.copytree(p, flat / p.name)
    ds = load_dataset(str(flat))
    assert ds.partition is None and ds.num_classes == 3
    s = generate_splits(ds, seed=0)
    assert len(s.test) > 0 and len(s.val) > 0


def test_image_bytes_in_memory_roundtrip():
    buf = io.BytesIO()
    Image.new("RGBA", (5, 5), (255, 0, 0, 0)).save(buf, format="PNG")
    buf.seek(0)
    assert to_rgb(Image.open(buf)).getpixel((0, 0)) == (0, 0, 0)  # transparent -> black, not red
