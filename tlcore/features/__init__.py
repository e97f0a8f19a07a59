"""Features shared by the methods: extract a backbone's tap activations once, cache them on disk,
post-process them (FNE). Sits below :mod:`tlcore.methods` and imports none of them, so feature
extraction, ranking and layer probing read the same cached features."""

from tlcore.features.cache import CacheWriter, FeatureCache, default_cache_root, identity_digest
from tlcore.features.extractor import (
    ExtractionCost,
    ExtractionStats,
    Extractor,
    FeatureBank,
    cache_identity,
    iter_features,
    tap_flops_per_input,
)
from tlcore.features.fne import ZERO_STD, discretize, full_network_embedding, standardization_stats, standardize

__all__ = [
    "ZERO_STD",
    "CacheWriter",
    "ExtractionCost",
    "ExtractionStats",
    "Extractor",
    "FeatureBank",
    "FeatureCache",
    "cache_identity",
    "default_cache_root",
    "discretize",
    "full_network_embedding",
    "identity_digest",
    "iter_features",
    "standardization_stats",
    "standardize",
    "tap_flops_per_input",
]
