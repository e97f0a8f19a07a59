"""Weights as data, and loading them: where a named set of pretrained weights lives
(:class:`WeightsSource`), and reading a state dict from a file into a network.

Below both the backbone factory (:mod:`tlcore.models.base`) and the Keras mapping
(:mod:`tlcore.models.keras_weights`), which load through :func:`load_weights_into`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from tlcore.errors import WeightsError

RANDOM_WEIGHTS = ("random", "none", "scratch")


@dataclass(frozen=True)
class WeightsSource:
    """Where a named set of pretrained weights lives.

    ``local_file`` returns the path of an offline copy or None; ``url`` is used only for an
    explicit download. ``categories`` are the class names of the original head (ImageNet).
    """

    name: str
    description: str
    local_file: Callable[[], Path | None]
    url: str | None = None
    categories: tuple[str, ...] | None = None
    reference_top1: float | None = None

    def available_offline(self) -> bool:
        try:
            p = self.local_file()
        except Exception:
            return False
        return p is not None and Path(p).is_file()


def hub_cache_file(url: str) -> Path:
    """Where ``torch.hub.load_state_dict_from_url`` keeps (or would keep) a download."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url.split("?")[0])


def read_weights_file(path: str | os.PathLike, what: str = "Weights") -> tuple[dict[str, torch.Tensor], dict]:
    """A state dict from a file (unwrapped from the usual checkpoint keys) and the tlcore meta saved
    beside it (empty for a bare state dict); one sentence naming the file when it cannot be used."""
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"{what} file {path} does not exist.") from None
    except Exception as exc:
        first = str(exc).splitlines()[0][:160] if str(exc) else ""
        raise WeightsError(f"{what} file {path} could not be read as PyTorch weights ({type(exc).__name__}: "
                           f"{first}); give a state dict saved with torch.save.") from None
    meta = obj["tlcore"] if isinstance(obj, dict) and isinstance(obj.get("tlcore"), dict) else {}
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{what} file {path} does not hold a state dict (a dict of tensors).")
    return obj, meta


def _strip_prefix(sd: dict[str, torch.Tensor], model_keys: set[str]) -> dict[str, torch.Tensor]:
    """Accept state dicts saved from a Backbone (``net.``) or DataParallel (``module.``)."""
    for prefix in ("net.", "module.", "module.net."):
        if not (set(sd) & model_keys) and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def load_weights_into(net: nn.Module, sd: dict[str, torch.Tensor], source: str, name: str,
                      head_path: str) -> list[str]:
    """Load a state dict strictly, except a head of another size (skipped); returns notes."""
    own = net.state_dict()
    sd = _strip_prefix(sd, set(own))
    head_prefix = head_path + "."
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shape = [k for k in sd if k in own and sd[k].shape != own[k].shape]
    head_skipped = [k for k in shape + missing + unexpected if k.startswith(head_prefix)]
    missing = [k for k in missing if not k.startswith(head_prefix)]
    unexpected = [k for k in unexpected if not k.startswith(head_prefix)]
    shape_body = [k for k in shape if not k.startswith(head_prefix)]
    if missing or unexpected or shape_body:
        parts = []
        if shape_body:
            k = shape_body[0]
            parts.append(f"{k} has shape {list(sd[k].shape)} in the file but {list(own[k].shape)} in the model")
        if missing:
            parts.append(f"missing {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:3])}{' ...' if len(unexpected) > 3 else ''}")
        raise WeightsError(f"Weights from {source} do not fit {name}: " + "; ".join(parts) + ".")
    load = {k: v for k, v in sd.items() if k not in head_skipped and k in own}
    net.load_state_dict(load, strict=False)
    return [f"head weights of another size in {source} were not loaded ({head_skipped[0]})"] if head_skipped else []
