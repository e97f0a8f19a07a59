"""Model descriptions: JSON files listing which taps feature extraction reads, like the seed's.

    {"backbone": "vgg16", "percent": 75, "taps": ["features.1", ...], "description": "..."}

``data/model_descriptions/{backbone}_{percent}.json`` ships 100/75/50/25 % variants per backbone.
The seed's own files (``{"input_reshape": [224, 224], "input_tensor": ..., "target_tensors":
["block4_conv2/Relu:0", ...]}``) are read too: their TensorFlow tensor names become taps
(:mod:`tlcore.models.keras_names` documents the mapping for VGG16 and the ResNets).
A variant keeps that share of the backbone's taps, evenly spaced and always including the
deepest one; tap names are module paths (torchvision's convention) instead of TensorFlow tensors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tlcore.errors import BackboneError

DESCRIPTIONS_DIR = Path(__file__).resolve().parents[2] / "data" / "model_descriptions"
PERCENTS = (100, 75, 50, 25)


@dataclass(frozen=True)
class ModelDescription:
    backbone: str
    taps: tuple[str, ...]
    percent: int | None = None
    description: str = ""
    path: Path | None = None
    input_size: int | None = None  # the seed's input_reshape, when square

    @property
    def name(self) -> str:
        return self.path.stem if self.path else f"{self.backbone}_{self.percent or 'custom'}"


def select_taps(taps: tuple[str, ...], percent: int) -> tuple[str, ...]:
    """``percent`` % of the taps, evenly spaced, deepest included."""
    n = len(taps)
    k = min(n, max(1, round(n * percent / 100)))
    step = n / k
    idx = sorted({round((n - 1) - j * step) for j in range(k)})
    return tuple(taps[i] for i in idx)


def default_description(backbone: str, percent: int = 100) -> ModelDescription:
    from tlcore.models.base import backbone_config

    cfg = backbone_config(backbone)
    return ModelDescription(backbone, select_taps(cfg.taps, percent), percent,
                            f"{percent}% of {backbone}'s taps, evenly spaced, deepest included")


def load_description(path_or_name: str | Path, backbone: str | None = None) -> ModelDescription:
    """Read a description JSON (a path, or a name under ``data/model_descriptions``)."""
    p = Path(path_or_name).expanduser()
    if not p.suffix and not p.exists():
        p = DESCRIPTIONS_DIR / f"{path_or_name}.json"
    if not p.is_file():
        shipped = ", ".join(sorted(q.stem for q in DESCRIPTIONS_DIR.glob("*.json"))[:8])
        raise BackboneError(f"Model description {path_or_name} does not exist; give a JSON file or a shipped "
                            f"name such as {shipped}, ...")
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise BackboneError(f"Model description {p} is not valid JSON (line {exc.lineno}: {exc.msg}).") from None
    if isinstance(data, dict) and "target_tensors" in data:
        return _seed_description(data, p, backbone)
    taps = data.get("taps") or data.get("layers")
    if not isinstance(taps, list) or not taps or not all(isinstance(t, str) for t in taps):
        raise BackboneError(f"Model description {p} needs a non-empty list of layer names under \"taps\".")
    bb = data.get("backbone") or backbone
    if bb is None:
        raise BackboneError(f"Model description {p} does not say which backbone it describes (\"backbone\").")
    if backbone is not None and data.get("backbone") and data["backbone"] != backbone:
        raise BackboneError(f"Model description {p} is for {data['backbone']}, not {backbone}; pick a matching file.")
    return ModelDescription(bb, tuple(taps), data.get("percent"), data.get("description", ""), p)


def _seed_description(data: dict, path: Path, backbone: str | None) -> ModelDescription:
    """A tl-tradeoff description: TensorFlow tensor names mapped to this backbone's taps."""
    from tlcore.models.keras_names import guess_backbone, map_tensors

    tensors = data.get("target_tensors")
    if not isinstance(tensors, list) or not tensors or not all(isinstance(t, str) for t in tensors):
        raise BackboneError(f"Model description {path} needs a non-empty list of tensor names under "
                            "\"target_tensors\".")
    bb = backbone or guess_backbone(tensors)
    if bb is None:
        raise BackboneError(f"Model description {path} names tensors that both resnet50 and resnet152 have; say "
                            "which network it describes with --backbone resnet50 or --backbone resnet152.")
    size = data.get("input_reshape")
    square = isinstance(size, list) and len(size) == 2 and size[0] == size[1] and isinstance(size[0], int)
    return ModelDescription(bb, map_tensors(tensors, bb), None, str(data.get("description", "")), path,
                            size[0] if square else None)


def write_default_descriptions(out_dir: Path = DESCRIPTIONS_DIR) -> list[Path]:
    """Regenerate the shipped JSON files from the registry (a test checks they are current)."""
    from tlcore.models.base import backbones

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in backbones.names():
        for pct in PERCENTS:
            d = default_description(name, pct)
            path = out_dir / f"{name}_{pct}.json"
            path.write_text(json.dumps({"backbone": name, "percent": pct, "taps": list(d.taps),
                                        "description": d.description}, indent=2) + "\n")
            written.append(path)
    return written
