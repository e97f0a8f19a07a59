"""Split CSVs where the seed keeps them (``--split-path``, else ``root/splits/``, else the dataset root),
the error for a ``--split-path`` that is not there, the overlap warnings of every pair of sets, and
what the ten crops are (the four corners first, as the seed's ``image_crop_0..3``)."""

from __future__ import annotations

import csv
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from tlcore.data import generate_splits, load_split_csvs, resolve_splits, scan_folder, write_split_csvs
from tlcore.data.loading import ImageBatches, Preprocessing
from tlcore.data.splits import SplitOverlapWarning, find_split_dir
from tlcore.errors import DatasetError
from tlcore.methods.common import load_data  # imported here, not in a test: mutation workers fork after imports
from tlcore.reporting import Reporter
from tlcore.specs import ExperimentSpec


def _rows(path):
    return list(csv.reader(open(path)))


def _leak(folder, *leaks):
    """Each leak ``(into, from_set, n)`` appends the first n rows of ``from_set`` to ``into``, in order."""
    for into, from_set, n in leaks:
        rows = _rows(folder / from_set)[:n]
        with open(folder / into, "a", newline="") as f:
            csv.writer(f).writerows(rows)
    return folder


def _splits_with_leaks(digits_folder, folder, *leaks):
    """Generated (disjoint) split CSVs of ``digits_folder`` in ``folder``, then the ``leaks`` (:func:`_leak`)."""
    ds = scan_folder(digits_folder)
    write_split_csvs(ds, generate_splits(ds, seed=0, spc_values=[2]), folder)
    return _leak(folder, *leaks)


def test_csvs_in_the_dataset_root_are_found_and_splits_folder_comes_first(digits_folder_copy, tmp_path):
    ds = scan_folder(digits_folder_copy)
    write_split_csvs(ds, generate_splits(ds, seed=1, spc_values=[3]), digits_folder_copy)  # the root itself
    assert find_split_dir(scan_folder(digits_folder_copy), None) == digits_folder_copy
    s = resolve_splits(scan_folder(digits_folder_copy))
    assert s.origin == f"csv: {digits_folder_copy}" and s.spc_values == [3] and s.draws(3) == 5
    # root/splits/ wins over the root; --split-path wins over both
    write_split_csvs(ds, generate_splits(ds, seed=1, spc_values=[4]), digits_folder_copy / "splits")
    assert resolve_splits(scan_folder(digits_folder_copy)).spc_values == [4]
    elsewhere = tmp_path / "mine"
    write_split_csvs(ds, generate_splits(ds, seed=1, spc_values=[6]), elsewhere)
    assert resolve_splits(scan_folder(digits_folder_copy), elsewhere).spc_values == [6]
    # a root without test.csv holds no split set: generated splits instead
    (digits_folder_copy / "test.csv").unlink()
    (digits_folder_copy / "splits" / "test.csv").unlink()
    assert find_split_dir(scan_folder(digits_folder_copy), None) is None
    assert resolve_splits(scan_folder(digits_folder_copy), seed=2).origin == "generated (seed 2)"


def test_a_split_path_that_is_not_there_is_one_sentence(digits_folder, tmp_path):
    missing = tmp_path / "no-such-folder"
    with pytest.raises(DatasetError, match=r"^Split folder .*no-such-folder does not exist; pass the folder that "
                                           r"holds val.csv and test.csv\.$"):
        resolve_splits(scan_folder(digits_folder), missing)
    (tmp_path / "a-file").write_text("")
    with pytest.raises(DatasetError, match="a-file does not exist"):  # a file is no split folder either
        resolve_splits(scan_folder(digits_folder), tmp_path / "a-file")


def test_the_cli_refuses_a_missing_split_path_in_one_line(digits_folder, tmp_path, capsys):
    missing = tmp_path / "no-such-folder"
    from tlcore.cli import main

    assert main(["fe", "--dataset", str(digits_folder), "--split-path", str(missing), "--mlflow-path",
                 str(tmp_path / "store"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Split folder") and "does not exist" in err and err.count("\n") == 1
    from tlcore.tracking import Tracker

    client = Tracker(str(tmp_path / "store")).client
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []  # refused before a run


def test_a_split_folder_without_val_or_test_names_the_missing_file(digits_folder, tmp_path):
    ds = scan_folder(digits_folder)
    out = tmp_path / "splits"
    write_split_csvs(ds, generate_splits(ds, spc_values=[2]), out)
    (out / "val.csv").unlink()
    with pytest.raises(DatasetError, match="has no val.csv"):
        load_split_csvs(ds, out)


@pytest.mark.parametrize(("into", "from_set", "pair"), [
    ("val.csv", "test.csv", "val and test"),
    ("train_samples_02_split_1.csv", "val.csv", "train and val"),
    ("train_samples_02_split_0.csv", "test.csv", "train and test"),
])
def test_every_overlap_between_sets_is_a_warning_that_counts_the_images(digits_folder, tmp_path, into, from_set,
                                                                        pair):
    out = _splits_with_leaks(digits_folder, tmp_path / "splits")
    assert load_split_csvs(scan_folder(digits_folder), out).warnings == []  # generated splits are disjoint
    _leak(out, (into, from_set, 2))
    with pytest.warns(SplitOverlapWarning) as caught:
        loaded = load_split_csvs(scan_folder(digits_folder), out)
    (message,) = loaded.warnings
    assert message == (f"Split CSVs in {out}: 2 image(s) are in both {pair}. Scores on the overlapping set are "
                       "optimistic; regenerate disjoint splits with `python -m tlcore splits`.")
    assert [str(w.message) for w in caught] == [message]
    others = {"val and test", "train and val", "train and test"} - {pair}
    assert not any(o in message for o in others)


def test_two_overlaps_are_one_warning_that_lists_both(digits_folder, tmp_path):
    out = _splits_with_leaks(digits_folder, tmp_path / "splits", ("val.csv", "test.csv", 1),
                             ("train_samples_02_split_0.csv", "val.csv", 3))
    with pytest.warns(SplitOverlapWarning):
        (message,) = load_split_csvs(scan_folder(digits_folder), out).warnings
    assert message.startswith(f"Split CSVs in {out}: 3 image(s) are in both train and val; 1 image(s) are in both "
                              "val and test. Scores")


def test_overlaps_of_loaded_splits_reach_the_run_as_warnings(digits_folder, tmp_path):
    out = _splits_with_leaks(digits_folder, tmp_path / "splits", ("val.csv", "test.csv", 3))

    class Messages(Reporter):
        def __init__(self):
            self.seen = []

        def message(self, text, level="info"):
            self.seen.append((level, text))

    rec = Messages()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SplitOverlapWarning)
        load_data(ExperimentSpec("fe", str(digits_folder), split_path=str(out), samples_per_class=(2,), splits=1),
                  rec)
    assert [level for level, _ in rec.seen] == ["warning"] and "3 image(s) are in both val and test" in rec.seen[0][1]


def test_ten_crops_start_with_the_four_corners_then_the_centre_then_their_mirrors(tmp_path):
    # a 32 x 32 image whose pixel (r, c) holds red = 4 r, green = 4 c: every crop says where it was cut
    r, c = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    pixels = np.stack([4 * r, 4 * c, np.full_like(r, 7)], axis=-1).astype(np.uint8)
    for label in ("a", "b"):
        (tmp_path / "ds" / label).mkdir(parents=True)
        Image.fromarray(pixels).save(tmp_path / "ds" / label / "img.png")
    ds = scan_folder(tmp_path / "ds")
    crops = ImageBatches(ds, np.arange(1), Preprocessing(28), crops=True)[0][0]  # 28 / 0.875 = 32: no resize
    full = torch.from_numpy(pixels).permute(2, 0, 1)
    mirrored = full.flip(-1)
    origins = [(0, 0), (0, 4), (4, 0), (4, 4), (2, 2)]  # top-left, top-right, bottom-left, bottom-right, centre
    for i, (top, left) in enumerate(origins):
        assert torch.equal(crops[i], full[:, top:top + 28, left:left + 28]), f"crop {i}: row {top}, column {left}"
        # crops 5-9: the same five places in the mirrored image (so crop 5 is crop 1 mirrored)
        assert torch.equal(crops[i + 5], mirrored[:, top:top + 28, left:left + 28]), f"crop {i + 5}"
    assert torch.equal(crops[5], crops[1].flip(-1)) and torch.equal(crops[9], crops[4].flip(-1))


def test_csvs_may_name_images_outside_the_scanned_layout(digits_folder, tmp_path):
    ds = scan_folder(digits_folder)
    out = tmp_path / "splits"
    write_split_csvs(ds, generate_splits(ds, seed=0, spc_values=[2]), out)
    extra = tmp_path / "elsewhere" / "extra.png"
    extra.parent.mkdir()
    Image.new("L", (32, 32), 128).save(extra)
    with open(out / "train_samples_02_split_0.csv", "a", newline="") as f:
        csv.writer(f).writerow([str(extra), "train", "extra.png", "digit1"])
    fresh = scan_folder(digits_folder)
    n = len(fresh)
    loaded = load_split_csvs(fresh, out)
    assert n in loaded.train[2][0] and len(loaded.train[2][0]) == 7  # 2 per class + the extra image
    assert len(fresh) == n + 1 and fresh.source.paths[n] == extra.resolve()
    assert fresh.labels[n] == 1 and fresh.partition[n] == "train"


def test_split_file_errors_word_for_word(digits_folder, tmp_path):
    ds = scan_folder(digits_folder)
    out = tmp_path / "splits"
    write_split_csvs(ds, generate_splits(ds, seed=0, spc_values=[2]), out)
    for f in out.glob("train_samples_*.csv"):
        f.unlink()
    with pytest.raises(DatasetError) as err:
        load_split_csvs(ds, out)
    assert str(err.value) == f"Split folder {out} has no train_samples_XX_split_K.csv files."
    (out / "test.csv").unlink()
    with pytest.raises(DatasetError) as err:
        load_split_csvs(ds, out)
    assert str(err.value) == (f"Split folder {out} has no test.csv; it must hold val.csv, test.csv and "
                              "train_samples_XX_split_K.csv files.")
    write_split_csvs(ds, generate_splits(ds, seed=0, spc_values=[2]), out)
    with open(out / "val.csv", "a", newline="") as f:
        csv.writer(f).writerow(["digits3/val/digit0/x.png", "val", "x.png", "zebra"])
    with pytest.raises(DatasetError) as err:
        load_split_csvs(scan_folder(digits_folder), out)
    assert str(err.value) == (f"Split CSVs in {out} name 1 label(s) that are not classes of {ds.name}, first: 'zebra' "
                              "(val.csv, line 16); the dataset's classes are its folder names (digit0, digit1, "
                              "digit2...).")
    write_split_csvs(ds, generate_splits(ds, seed=0, spc_values=[2]), out)
    with open(out / "test.csv", "a", newline="") as f:
        csv.writer(f).writerow(["digits3/test/digit0/ghost.png", "test", "ghost.png", "digit0"])
    with pytest.raises(DatasetError) as err:
        load_split_csvs(scan_folder(digits_folder), out)
    # a path found nowhere is reported as resolved against the dataset root, the first place it was looked for
    assert str(err.value) == (f"1 image(s) listed in the split CSVs in {out} do not exist, first: "
                              f"{(digits_folder / 'digits3/test/digit0/ghost.png').resolve()}; fix the paths or "
                              "regenerate the splits with `python -m tlcore splits`.")


def test_a_folder_without_partitions_writes_train_rows_and_embedded_sets_have_no_csv_folder(tmp_path):
    from tlcore.data import load_dataset

    for label in ("a", "b"):
        (tmp_path / "flat" / label).mkdir(parents=True)
        for i in range(4):
            Image.new("L", (8, 8), 40 * i).save(tmp_path / "flat" / label / f"{label}{i}.png")
    ds = scan_folder(tmp_path / "flat")
    write_split_csvs(ds, generate_splits(ds, seed=0, spc_values=[1]), tmp_path / "out")
    rows = _rows(tmp_path / "out" / "all_images.csv")
    assert {r[1] for r in rows} == {"train"} and rows[0][0] == "flat/a/a0.png" and rows[0][2:] == ["a0.png", "a"]
    assert find_split_dir(load_dataset("digits"), None) is None


def test_a_dataset_from_split_csvs_reads_each_row_once_with_its_partition_and_names_the_missing(tmp_path, monkeypatch):
    """The seed's --dataset NAME --split-path DIR (csv_dataset): relative paths from the split folder's parents,
    absolute paths as they are, the partition column in any case (an unknown one is train), a row listed twice
    read once, and every missing image counted in one sentence. Expected values written out by hand."""
    from tlcore.data.splits import csv_dataset

    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    for rel in ("tex/train/a/1.png", "tex/train/b/2.png", "tex/train/b/3.png", "tex/validation/a/v.png",
                "tex/test/b/t.png"):
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        (data / rel).write_bytes(b"")  # csv_dataset only checks that each file exists
    split_dir = data / "splits" / "tex"
    split_dir.mkdir(parents=True)
    absolute = (data / "tex/test/b/t.png").resolve()

    def write(name, *rows):
        (split_dir / name).write_text("".join(f"{r},{p},{r.rsplit('/', 1)[-1]},{label}\n" for r, p, label in rows))

    write("val.csv", ("tex/train/a/1.png", "train", "a"), ("tex/validation/a/v.png", "Validation", "a"))
    write("test.csv", (str(absolute), "TEST", "b"))
    write("train_samples_01_split_0.csv", ("tex/train/a/1.png", "train", "a"), ("tex/train/b/2.png", "Training", "b"),
          ("tex/train/b/3.png", "holdout", "b"))
    ds = csv_dataset("tex", split_dir)
    assert ds.name == "tex" and ds.classes == ["a", "b"] and ds.root == (data / "tex").resolve()
    got = {str(p.relative_to(data.resolve())): (part, ds.classes[label])
           for p, part, label in zip(ds.source.paths, ds.partition, ds.labels, strict=True)}
    assert got == {"tex/train/a/1.png": ("train", "a"), "tex/validation/a/v.png": ("val", "a"),
                   "tex/test/b/t.png": ("test", "b"), "tex/train/b/2.png": ("train", "b"),
                   "tex/train/b/3.png": ("train", "b")}

    write("val.csv", ("tex/train/a/gone.png", "val", "a"), ("tex/validation/a/v.png", "val", "a"),
          ("tex/nowhere.png", "val", "b"))
    with pytest.raises(DatasetError) as missing:
        csv_dataset("tex", split_dir)
    assert str(missing.value) == (
        f"2 image(s) listed in the split CSVs in {split_dir} for dataset 'tex' do not exist, first: "
        f"tex/train/a/gone.png (relative paths are read from {tmp_path}, {split_dir.resolve()}, "
        f"{split_dir.resolve().parent} or the split folder's parents); run from the folder the CSV paths start in, "
        "or fix the paths.")
    with pytest.raises(DatasetError) as no_folder:
        csv_dataset("tex", tmp_path / "no-such-folder")
    assert str(no_folder.value) == (f"Split folder {tmp_path / 'no-such-folder'} does not exist; pass the folder "
                                    "that holds val.csv and test.csv.")

    # images of two dataset folders: no single root for precomputed crops to mirror
    (data / "other/test/b").mkdir(parents=True)
    (data / "other/test/b/o.png").write_bytes(b"")
    write("val.csv", ("tex/validation/a/v.png", "val", "a"), ("other/test/b/o.png", "val", "b"))
    assert csv_dataset("tex", split_dir).root is None
