"""Where QUANTA's files go and what they are called: the seed's export folder and file names.

Kept apart so the source (its folder name), the preparation (the output folder), the exports and
Source training (its ``{task}_training`` folder) share one spelling without importing each other.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

RESUME_FORMAT = "tlcore.quanta.v1"


def safe_name(name: str) -> str:
    """A dataset or task name as one path component: ``digits:0-4`` -> ``digits_0-4``."""
    text = str(name).rstrip("/\\")
    if "/" in text or "\\" in text:
        text = re.split(r"[\\/]", text)[-1]
    text = re.sub(r"[^A-Za-z0-9._-]+", "_", text).lstrip(".")
    return text or "task"


def export_dir(outdir: str | os.PathLike, source: str, target: str) -> Path:
    return Path(outdir).expanduser() / f"{safe_name(source)}_to_{safe_name(target)}"


def export_names(run: int, label: str) -> dict[str, str]:
    """The seed's file names for run ``run`` and layer label ``label`` (an index, a tap name or ``all``)."""
    s = f"r_{run}_l_{safe_name(label)}"
    return {
        "quantas": f"quantas_{s}.jsonl",
        "training": f"training_metrics_of_target_{s}.jsonl",
        "testing_source": f"testing_metrics_of_source_{s}.jsonl",
        "testing_target": f"testing_metrics_of_target_{s}.jsonl",
        "source_model": f"source_{s}.pt",
        "target_model": f"target_{s}.pt",
    }
