"""An on-disk cache of extracted features: extract each image once, reuse it across a whole curve.

One folder per *identity* (dataset, backbone, weights, taps, crops, resolution, precision),
named by a hash of it. Inside, features are appended in chunks: ``<name>.npy`` (float32 rows,
memory-mapped on read) and ``<name>.json`` (each row's image key and fingerprint), the index
written last and both renamed into place, so a chunk exists whole or not at all. An interrupted
extraction therefore keeps every chunk it flushed and the next run extracts only what is
missing. A row is a hit only when the image's fingerprint still matches
(:meth:`ImageSource.fingerprint`): a changed image invalidates its own entry, nothing else.
Later chunks win over earlier ones, so re-extracted images simply supersede their old rows.

``meta.json`` keeps the identity (to read what a folder holds) and the measured per-image
extraction cost per device, so a run served entirely from the cache can still log what it
alone would have cost.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tlcore.tracking import store_folder

CACHE_FORMAT = 1
CACHE_DIR_NAME = "feature_cache"


def default_cache_root(tracking_uri: str) -> Path:
    """Beside the results store: ``<store folder>/feature_cache`` for a local sqlite store, else
    ``$TLCORE_CACHE_DIR`` or ``~/.cache/tlcore/features`` (a tracking server has no folder of ours)."""
    folder = store_folder(tracking_uri)
    if folder is not None and ":memory:" not in tracking_uri:
        return folder / CACHE_DIR_NAME
    env = os.environ.get("TLCORE_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tlcore" / "features"


def identity_digest(identity: dict[str, Any]) -> str:
    text = json.dumps({"format": CACHE_FORMAT, **identity}, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=10).hexdigest()


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class FeatureCache:
    """Features of one identity; see the module docstring for the layout.

    Example:
        >>> cache = FeatureCache.open(root, {"dataset": "digits", "backbone": "resnet18", ...})
        >>> hit = cache.lookup(keys, fingerprints)           # bool mask
        >>> feats = cache.read([k for k, h in zip(keys, hit) if h])
        >>> with cache.writer() as w: w.add(keys, fingerprints, features)
    """

    def __init__(self, folder: Path, identity: dict[str, Any]) -> None:
        self.folder = Path(folder)
        self.identity = dict(identity)
        self._index: dict[str, tuple[str, int, str]] | None = None  # key -> (chunk, row, fingerprint)
        self._arrays: dict[str, np.ndarray] = {}
        self.skipped_chunks: list[str] = []

    @classmethod
    def open(cls, root: str | Path, identity: dict[str, Any]) -> FeatureCache:
        """The cache folder for ``identity`` under ``root`` (created with its ``meta.json``)."""
        slug = "".join(c if c.isalnum() or c in "-_" else "_" for c in str(identity.get("backbone", "features")))
        folder = Path(root).expanduser() / f"{slug}-{identity_digest(identity)}"
        folder.mkdir(parents=True, exist_ok=True)
        cache = cls(folder, identity)
        if not (folder / "meta.json").is_file():
            cache._write_meta({"format": CACHE_FORMAT, "identity": identity, "created": time.time(), "cost": {}})
        return cache

    # -- meta -----------------------------------------------------------------------------------
    def _read_meta(self) -> dict[str, Any]:
        try:
            return json.loads((self.folder / "meta.json").read_text())
        except (OSError, json.JSONDecodeError):
            return {"format": CACHE_FORMAT, "identity": self.identity, "cost": {}}

    def _write_meta(self, meta: dict[str, Any]) -> None:
        _atomic_write_text(self.folder / "meta.json", json.dumps(meta, indent=2, default=str))

    def extraction_cost(self, device_key: str) -> dict[str, Any] | None:
        """The per-image extraction cost last measured on ``device_key``, if any."""
        return self._read_meta().get("cost", {}).get(device_key)

    def record_extraction_cost(self, device_key: str, cost: dict[str, Any]) -> None:
        meta = self._read_meta()
        meta.setdefault("cost", {})[device_key] = cost
        self._write_meta(meta)

    def tap_widths(self) -> list[int] | None:
        """Each tap's share of a feature row, when a reader recorded it (see :meth:`record_tap_widths`)."""
        widths = self._read_meta().get("tap_widths")
        return [int(w) for w in widths] if widths else None

    def record_tap_widths(self, widths: Sequence[int]) -> None:
        """Remember how a row splits into taps, so that reading them back needs no network to find out."""
        meta = self._read_meta()
        meta["tap_widths"] = [int(w) for w in widths]
        self._write_meta(meta)

    # -- reading --------------------------------------------------------------------------------
    def _chunk_names(self) -> list[str]:
        return sorted(p.stem for p in self.folder.glob("chunk-*.json"))

    def _load_index(self) -> dict[str, tuple[str, int, str]]:
        if self._index is not None:
            return self._index
        index: dict[str, tuple[str, int, str]] = {}
        shape = None
        for name in self._chunk_names():
            try:
                entry = json.loads((self.folder / f"{name}.json").read_text())
                keys, fps = entry["keys"], entry["fingerprints"]
                if len(keys) != len(fps) or not (self.folder / f"{name}.npy").is_file():
                    raise ValueError("incomplete chunk")
                row_shape = tuple(entry["row_shape"])
            except (OSError, ValueError, KeyError, TypeError):
                self.skipped_chunks.append(name)  # unreadable: its images count as misses
                continue
            if shape is None:
                shape = row_shape
            elif row_shape != shape:
                self.skipped_chunks.append(name)
                continue
            for row, (k, fp) in enumerate(zip(keys, fps, strict=True)):
                index[k] = (name, row, fp)  # later chunks (sorted by time) supersede earlier rows
        self._index = index
        return index

    def __len__(self) -> int:
        return len(self._load_index())

    def lookup(self, keys: Sequence[str], fingerprints: Sequence[str]) -> np.ndarray:
        """Boolean mask: which images have a row whose fingerprint still matches."""
        index = self._load_index()
        return np.array([(e := index.get(k)) is not None and e[2] == fp
                         for k, fp in zip(keys, fingerprints, strict=True)], dtype=bool)

    def _array(self, chunk: str) -> np.ndarray:
        if chunk not in self._arrays:
            self._arrays[chunk] = np.load(self.folder / f"{chunk}.npy", mmap_mode="r")
        return self._arrays[chunk]

    def read(self, keys: Sequence[str]) -> np.ndarray:
        """Features of ``keys`` (all must be hits), in the order given, as one float32 array."""
        index = self._load_index()
        entries = [index[k] for k in keys]
        if not entries:
            return np.empty((0,), dtype=np.float32)
        first = self._array(entries[0][0])
        out = np.empty((len(entries), *first.shape[1:]), dtype=np.float32)
        by_chunk: dict[str, tuple[list[int], list[int]]] = {}
        for pos, (chunk, row, _) in enumerate(entries):
            dst, src = by_chunk.setdefault(chunk, ([], []))
            dst.append(pos)
            src.append(row)
        for chunk, (dst, src) in by_chunk.items():
            out[dst] = self._array(chunk)[src]  # one gather per chunk from the memory map
        return out

    # -- writing --------------------------------------------------------------------------------
    def writer(self, flush_bytes: int = 64 * 2**20, flush_seconds: float = 30.0) -> CacheWriter:
        return CacheWriter(self, flush_bytes, flush_seconds)

    def _write_chunk(self, keys: list[str], fingerprints: list[str], features: np.ndarray) -> str:
        name = f"chunk-{time.time_ns():020d}-{os.getpid()}"
        tmp = self.folder / f".{name}.npy.tmp"
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(features, dtype=np.float32))
        os.replace(tmp, self.folder / f"{name}.npy")
        _atomic_write_text(self.folder / f"{name}.json", json.dumps(
            {"keys": keys, "fingerprints": fingerprints, "row_shape": list(features.shape[1:])}))
        if self._index is not None:
            for row, (k, fp) in enumerate(zip(keys, fingerprints, strict=True)):
                self._index[k] = (name, row, fp)
        return name


class CacheWriter:
    """Buffers rows and writes a chunk every ``flush_bytes`` or ``flush_seconds``, and on exit.

    Exiting through an exception (a cancel, a bad image) still flushes what was extracted,
    which is what lets the next run resume.
    """

    def __init__(self, cache: FeatureCache, flush_bytes: int, flush_seconds: float) -> None:
        self.cache = cache
        self.flush_bytes, self.flush_seconds = flush_bytes, flush_seconds
        self._keys: list[str] = []
        self._fps: list[str] = []
        self._feats: list[np.ndarray] = []
        self._bytes = 0
        self._since = time.monotonic()
        self.rows_written = 0

    def add(self, keys: Sequence[str], fingerprints: Sequence[str], features: np.ndarray) -> None:
        if len(keys) == 0:
            return
        self._keys.extend(keys)
        self._fps.extend(fingerprints)
        self._feats.append(np.asarray(features, dtype=np.float32))
        self._bytes += self._feats[-1].nbytes
        if self._bytes >= self.flush_bytes or time.monotonic() - self._since >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        if self._keys:
            self.cache._write_chunk(self._keys, self._fps, np.concatenate(self._feats))
            self.rows_written += len(self._keys)
        self._keys, self._fps, self._feats, self._bytes = [], [], [], 0
        self._since = time.monotonic()

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.flush()
