"""A real PostgreSQL and a real ``mlflow server`` on loopback, for the tests of a shared tracking server.

The same pair a team runs (docs/cluster.md): runs in PostgreSQL, artifacts through the server's proxied
artifact store. PostgreSQL refuses to run as root, so when the tests run as root its programs run as the
``postgres`` system user. Both listen on free ports on 127.0.0.1 only; PostgreSQL's unix socket stays in
its own temporary folder.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

POSTGRES_USER = "postgres"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_bin() -> Path:
    """The folder of ``initdb``/``pg_ctl`` (Debian keeps them under /usr/lib/postgresql/<version>/bin)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]), reverse=True)
    if found:
        return Path(found[0]).parent
    if which := shutil.which("initdb"):
        return Path(which).parent
    raise RuntimeError("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb); install Debian's "
                       "`postgresql` package (scripts/test.sh does) to run the tracking-server tests.")


def _as_postgres(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses root: run its programs as the ``postgres`` user then."""
    return ["runuser", "-u", POSTGRES_USER, "--", *cmd] if os.geteuid() == 0 else cmd


def _run(cmd: list[str], cwd: Path) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {(done.stderr or done.stdout).strip()}")


def _wait(what: str, ok, timeout_s: float, proc: subprocess.Popen | None = None, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ok():
            return
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-3000:] if log is not None and log.exists() else ""
    why = "exited" if proc is not None and proc.poll() is not None else f"did not answer within {timeout_s:.0f} s"
    raise RuntimeError(f"{what} {why}; its log ends:\n{tail}")


@dataclass
class Postgres:
    """One PostgreSQL cluster in ``folder``, listening on 127.0.0.1:``port`` with trust authentication."""

    folder: Path
    port: int
    bin: Path

    @classmethod
    def start(cls) -> Postgres:
        """A new cluster in a new folder of the system's temporary folder (pytest's own are private to root,
        which the ``postgres`` user cannot enter)."""
        folder = Path(tempfile.mkdtemp(prefix="tlcore-pg-"))
        pg = cls(folder, free_port(), postgres_bin())
        if os.geteuid() == 0:
            shutil.chown(folder, POSTGRES_USER, POSTGRES_USER)
        data = folder / "data"
        _run(_as_postgres([str(pg.bin / "initdb"), "-D", str(data), "-U", POSTGRES_USER, "-A", "trust", "-E", "UTF8",
                           "--no-sync"]), folder)
        # fsync off: a test cluster is thrown away, and syncing is most of a small write's cost
        options = f"-c listen_addresses=127.0.0.1 -p {pg.port} -k {folder} -c fsync=off -c full_page_writes=off"
        _run(_as_postgres([str(pg.bin / "pg_ctl"), "-D", str(data), "-l", str(folder / "postgres.log"), "-o", options,
                           "-w", "-t", "60", "start"]), folder)
        return pg

    def create_database(self, name: str) -> str:
        """A new empty database; returns its SQLAlchemy URI (what ``--backend-store-uri`` takes)."""
        _run(_as_postgres([str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", POSTGRES_USER,
                           name]), self.folder)
        # the driver named: SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3, and requirements pin psycopg2
        return f"postgresql+psycopg2://{POSTGRES_USER}@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        """Stop the cluster and remove its folder."""
        subprocess.run(_as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.folder / "data"), "-m", "immediate",
                                     "-w", "stop"]), capture_output=True, cwd=self.folder)
        shutil.rmtree(self.folder, ignore_errors=True)


@dataclass
class MlflowServer:
    """``mlflow server`` over a database, serving artifacts from ``artifacts`` through itself."""

    url: str
    proc: subprocess.Popen
    log: Path

    @classmethod
    def start(cls, backend_uri: str, folder: Path, timeout_s: float = 120.0) -> MlflowServer:
        folder.mkdir(parents=True, exist_ok=True)
        port = free_port()
        log = folder / "mlflow-server.log"
        cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri,
               "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1"]
        # no GenAI job runner (its consumers are processes of their own): tlcore never submits server jobs
        env = {**os.environ, "MLFLOW_TRACKING_URI": "", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        with log.open("wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=folder, env=env,
                                    start_new_session=True)
        url = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        try:
            _wait("The MLflow server", healthy, timeout_s, proc, log)
        except BaseException:
            cls(url, proc, log).stop()
            raise
        return cls(url, proc, log)

    def stop(self) -> None:
        """The server and its workers (uvicorn forks them: its own process group)."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, 15)
                self.proc.wait(10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(self.proc.pid, 9)
                self.proc.wait(10)
