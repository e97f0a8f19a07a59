"""The on-disk feature cache: hits, misses, a changed image invalidating only its entry, resume after a crash."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tlcore.features.cache import FeatureCache, default_cache_root, identity_digest

IDENTITY = {"dataset": "digits", "backbone": "resnet18", "weights": "imagenet", "taps": ["layer4.1"],
            "crops": "none", "resolution": 64}


def _feats(n: int, d: int = 4, start: int = 0) -> np.ndarray:
    return (np.arange(start, start + n * d, dtype=np.float32).reshape(n, d)) / 7.0


def test_miss_then_hit_returns_the_rows_in_the_order_asked(tmp_path):
    cache = FeatureCache.open(tmp_path, IDENTITY)
    keys, fps = ["a", "b", "c"], ["1", "1", "1"]
    assert not cache.lookup(keys, fps).any()
    with cache.writer() as w:
        w.add(keys, fps, _feats(3))
    again = FeatureCache.open(tmp_path, IDENTITY)  # a later run, fresh index
    assert again.lookup(keys, fps).all()
    np.testing.assert_array_equal(again.read(["c", "a"]), _feats(3)[[2, 0]])
    assert len(again) == 3


def test_a_changed_image_invalidates_only_its_entry_and_new_rows_supersede(tmp_path):
    cache = FeatureCache.open(tmp_path, IDENTITY)
    with cache.writer() as w:
        w.add(["a", "b"], ["v1", "v1"], _feats(2))
    hit = FeatureCache.open(tmp_path, IDENTITY).lookup(["a", "b"], ["v1", "v2"])  # b's file changed
    assert hit.tolist() == [True, False]
    with cache.writer() as w:
        w.add(["b"], ["v2"], np.full((1, 4), 9.0, dtype=np.float32))
    fresh = FeatureCache.open(tmp_path, IDENTITY)
    assert fresh.lookup(["a", "b"], ["v1", "v2"]).all()
    assert fresh.read(["b"]).tolist() == [[9.0] * 4]
    np.testing.assert_array_equal(fresh.read(["a"]), _feats(2)[:1])


def test_an_interrupted_extraction_keeps_what_it_flushed(tmp_path):
    cache = FeatureCache.open(tmp_path, IDENTITY)
    with pytest.raises(KeyboardInterrupt):
        with cache.writer(flush_bytes=1) as w:  # one chunk per batch
            w.add(["a", "b"], ["1", "1"], _feats(2))
            w.add(["c"], ["1"], _feats(1, start=100))
            raise KeyboardInterrupt
    resumed = FeatureCache.open(tmp_path, IDENTITY)
    assert resumed.lookup(["a", "b", "c", "d"], ["1"] * 4).tolist() == [True, True, True, False]


def test_half_written_chunks_are_ignored(tmp_path):
    cache = FeatureCache.open(tmp_path, IDENTITY)
    with cache.writer() as w:
        w.add(["a"], ["1"], _feats(1))
    (cache.folder / "chunk-99999999999999999999-1.npy").write_bytes(b"\x93NUMPY partial")  # index never written
    (cache.folder / "chunk-99999999999999999999-2.json").write_text("{\"keys\": [\"b\"]")  # truncated index
    fresh = FeatureCache.open(tmp_path, IDENTITY)
    assert fresh.lookup(["a", "b"], ["1", "1"]).tolist() == [True, False]
    assert fresh.skipped_chunks == ["chunk-99999999999999999999-2"]


def test_crop_features_keep_their_shape(tmp_path):
    cache = FeatureCache.open(tmp_path, {**IDENTITY, "crops": "ten"})
    feats = np.random.default_rng(0).normal(size=(3, 10, 5)).astype(np.float32)
    with cache.writer() as w:
        w.add(["x", "y", "z"], ["f"] * 3, feats)
    np.testing.assert_array_equal(FeatureCache.open(tmp_path, {**IDENTITY, "crops": "ten"}).read(["y"]), feats[1:2])


def test_every_part_of_the_identity_names_a_different_folder(tmp_path):
    base = FeatureCache.open(tmp_path, IDENTITY).folder
    for change in ({"resolution": 96}, {"taps": ["layer3.1"]}, {"crops": "ten"}, {"weights": "random (seed 0)"},
                   {"dataset": "/data/other"}):
        assert FeatureCache.open(tmp_path, {**IDENTITY, **change}).folder != base
    assert identity_digest(dict(reversed(list(IDENTITY.items())))) == identity_digest(IDENTITY)
    meta = json.loads((base / "meta.json").read_text())
    assert meta["identity"] == IDENTITY


def test_extraction_cost_is_remembered_per_device(tmp_path):
    cache = FeatureCache.open(tmp_path, IDENTITY)
    assert cache.extraction_cost("cpu: X") is None
    cache.record_extraction_cost("cpu: X", {"seconds_per_image": 0.01, "images": 100})
    assert FeatureCache.open(tmp_path, IDENTITY).extraction_cost("cpu: X")["seconds_per_image"] == 0.01


def test_default_location_is_beside_the_results_store(tmp_path, monkeypatch):
    assert default_cache_root(f"sqlite:///{tmp_path}/res/mlflow.db") == tmp_path / "res" / "feature_cache"
    monkeypatch.setenv("TLCORE_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert default_cache_root("http://mlflow.example:5000") == tmp_path / "elsewhere"
