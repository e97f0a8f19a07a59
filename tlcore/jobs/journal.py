"""The job journal: job records in a small JSON file beside the tracking store.

When the server is killed mid-job (SIGKILL, a crash, a power cut), the next start reads this file
to learn which jobs were interrupted (:meth:`JobRunner.recover`). Each entry names the server that
owns it, so servers sharing a store keep each other's live entries.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tlcore.tracking import _process_start_time, artifact_root, owner_alive

log = logging.getLogger(__name__)

JOURNAL_NAME = "tlcore-jobs.json"
JOURNAL_VERSION = 1
JOURNAL_KEEP = 100  # jobs remembered across restarts


def journal_path_for(tracking_uri: str) -> Path:
    """Beside a sqlite store; for a tracking server, in the user's cache folder (one file per URI)."""
    root = artifact_root(tracking_uri)
    if root:
        return Path(root).parent / JOURNAL_NAME
    import hashlib

    digest = hashlib.sha1(tracking_uri.encode()).hexdigest()[:12]
    return Path.home() / ".cache" / "tlcore" / f"jobs-{digest}.json"


def _this_server() -> dict[str, Any]:
    """Who owns a journal entry: this process (pid, host, start time) and this runner in it."""
    pid = os.getpid()
    return {"pid": pid, "host": socket.gethostname(), "start": _process_start_time(pid), "runner": uuid.uuid4().hex[:8]}


_LIVE_RUNNERS: set[str] = set()  # runners of this process that have not been closed


def _owner_alive(owner: Mapping[str, Any]) -> bool:
    if not owner:
        return False
    if owner.get("host") != socket.gethostname():
        return True  # another machine's server: not ours to judge
    if owner.get("pid") == os.getpid():
        return owner.get("runner") in _LIVE_RUNNERS
    return owner_alive(int(owner.get("pid") or 0), owner.get("start"))


class JobJournal:
    """Job records in one JSON file, rewritten atomically. Entries of other live servers are kept."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def load(self) -> list[dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return []
        except (OSError, json.JSONDecodeError) as exc:
            log.warning("Ignoring unreadable job journal %s: %s", self.path, exc)
            return []
        jobs = data.get("jobs", []) if isinstance(data, dict) else []
        return [j for j in jobs if isinstance(j, dict) and "id" in j]

    def save(self, ours: list[dict[str, Any]], owner: Mapping[str, Any]) -> None:
        """Write our entries, keeping entries of other servers that are still alive."""
        with self._lock:
            our_ids = {j["id"] for j in ours}
            others = [j for j in self.load() if j["id"] not in our_ids and j.get("owner") != dict(owner)]
            entries = sorted(others + ours, key=lambda j: j.get("submitted_at") or 0)
            if len(entries) > JOURNAL_KEEP:
                entries = entries[-JOURNAL_KEEP:]
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_text(json.dumps({"version": JOURNAL_VERSION, "jobs": entries}, indent=1, default=str))
            os.replace(tmp, self.path)

