"""ImageNet class names (shipped with torchvision, no download) and a top-k helper for `predict`."""

from __future__ import annotations

from torchvision.models._meta import _IMAGENET_CATEGORIES

IMAGENET_CATEGORIES: tuple[str, ...] = tuple(_IMAGENET_CATEGORIES)
