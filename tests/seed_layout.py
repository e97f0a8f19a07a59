"""A small dataset in the seeds' own layout, for running their command lines unchanged.

    work/                          <- the working directory the seed's commands run from
      textures/train|validation|test/<label>/<name>.jpg   (DTD's split names: "validation")
      splits/textures/all_images.csv, val.csv, test.csv, train_samples_01_split_{0,1}.csv,
                      train_samples_02_split_0.csv       (no header; paths start with textures/)
      textures_crops/<split>/<label>/<name>_crop_{0..9}.jpg
      model_description/vgg16_imagenet/model_{100,25}.json   (the seed's files, TF tensor names)
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

LABELS = ("banded", "marbled", "zigzagged")
PER_SPLIT = {"train": 2, "validation": 2, "test": 2}
VGG_TENSORS = ["block1_conv1/Relu:0", "block1_conv2/Relu:0", "block2_conv1/Relu:0", "block2_conv2/Relu:0",
               "block3_conv1/Relu:0", "block3_conv2/Relu:0", "block3_conv3/Relu:0", "block4_conv1/Relu:0",
               "block4_conv2/Relu:0", "block4_conv3/Relu:0", "block5_conv1/Relu:0", "block5_conv2/Relu:0",
               "block5_conv3/Relu:0", "fc1/Relu:0", "fc2/Relu:0"]


def _image(rng: np.random.Generator, label: int, size: int = 32):
    from PIL import Image

    x = np.zeros((size, size, 3), np.uint8)
    x[..., label] = 200  # one colour per class: any backbone separates them
    x = np.clip(x.astype(int) + rng.integers(0, 40, x.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(x)


def write_seed_layout(work: Path, crops: bool = True) -> Path:
    rng = np.random.default_rng(0)
    rows: dict[str, list[list[str]]] = {s: [] for s in PER_SPLIT}
    for c, label in enumerate(LABELS):
        for split, n in PER_SPLIT.items():
            folder = work / "textures" / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                name = f"{label}_{split[:2]}{i:02d}.jpg"
                img = _image(rng, c)
                img.save(folder / name, quality=95)
                rows[split].append([f"textures/{split}/{label}/{name}", split, name, label])
                if crops:
                    cdir = work / "textures_crops" / split / label
                    cdir.mkdir(parents=True, exist_ok=True)
                    for k in range(10):
                        img.rotate(k).save(cdir / f"{name[:-4]}_crop_{k}.jpg", quality=95)
    splits = work / "splits" / "textures"
    splits.mkdir(parents=True, exist_ok=True)

    def write(name: str, data: list[list[str]]) -> None:
        with open(splits / name, "w", newline="") as f:
            csv.writer(f).writerows(data)

    write("all_images.csv", rows["train"] + rows["validation"] + rows["test"])
    write("val.csv", rows["validation"])
    write("test.csv", rows["test"])
    train = rows["train"]
    for k in range(2):  # 1 sample per class, two draws
        write(f"train_samples_01_split_{k}.csv", [r for j, r in enumerate(train) if j % 2 == k])
    write("train_samples_02_split_0.csv", train)  # the largest: the full balanced set, one draw
    desc = work / "model_description" / "vgg16_imagenet"
    desc.mkdir(parents=True, exist_ok=True)
    text = "Classical VGG16 architecture trained on imagenet (ILSVRC2012) http://www.image-net.org/challenges/LSVRC/2012/"
    for name, tensors in (("model_100.json", VGG_TENSORS), ("model_25.json", VGG_TENSORS[-3:])):
        (desc / name).write_text(json.dumps({"description": text, "input_reshape": [224, 224],
                                             "input_tensor": "input_2:0", "target_tensors": tensors}))
    return work
