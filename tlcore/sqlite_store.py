"""Creating, upgrading and opening a local sqlite results store when several processes may do it at once.

MLflow creates its schema on first open and upgrades it by Alembic migrations; two processes doing
that together raced (one failed every time, and 1 race in 7 left the store unusable). One process at
a time does it here, under a lock file beside the store; a store a killed process left half-migrated
is finished on the next open, and one that cannot be opened is explained in one sentence.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from tlcore.errors import TLError


def mlflow_program() -> str:
    """How to call MLflow's command line from a shell: ``mlflow`` when it is on the PATH, else the one
    beside this Python (a virtual environment that is not activated), else ``python -m mlflow``."""
    import shutil
    import sys

    beside = Path(sys.executable).parent / "mlflow"
    found = shutil.which("mlflow")
    if found and (not beside.exists() or Path(found).resolve() == beside.resolve()):
        return "mlflow"
    if beside.exists():
        return str(beside)
    return f"{sys.executable} -m mlflow"


#: How long a process waits for another one creating or upgrading the same store before giving up.
STORE_LOCK_TIMEOUT_S = 300.0
#: Tables Alembic leaves behind when a migration of an sqlite store stops half-way (``batch_alter_table``).
_ALEMBIC_TMP_PREFIX = "_alembic_tmp_"


def store_lock_path(db: Path) -> Path:
    """The lock file beside an sqlite store (``mlflow.db.lock``) that serialises its creation."""
    return db.with_name(db.name + ".lock")


def _leftover_migration_tables(db: Path) -> list[str]:
    """Alembic's temporary tables in ``db``: present only when a migration stopped half-way."""
    import sqlite3

    if not db.exists() or db.stat().st_size == 0:
        return []
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as con:
        rows = con.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return [r[0] for r in rows if r[0].startswith(_ALEMBIC_TMP_PREFIX)]


def _repair_half_migrated(uri: str, db: Path) -> list[str]:
    """Finish a migration that a killed process left half-done: drop Alembic's temporary tables, then let
    MLflow run the remaining migrations. Called under the store lock, so nobody else is migrating."""
    import sqlite3

    leftovers = _leftover_migration_tables(db)
    if not leftovers:
        return []
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as con, con:
        for name in leftovers:
            con.execute(f'DROP TABLE IF EXISTS "{name}"')
    from mlflow.store.db.utils import _upgrade_db, create_sqlalchemy_engine_with_retry

    engine = create_sqlalchemy_engine_with_retry(uri)
    try:
        _upgrade_db(engine)
    finally:
        engine.dispose()
    logging.getLogger(__name__).warning("Repaired the results store %s: a process had stopped while creating or "
                                        "upgrading it (left %s).", db, ", ".join(leftovers))
    return leftovers


def half_created_message(db: Path, exc: BaseException) -> str:
    """One sentence for a store MLflow cannot open even after the repair: what happened and what to do."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    return (f"The results store {db} is damaged or half-created (MLflow says: {first}); move {db} aside "
            f"(a new store is created on the next run) or pass --mlflow-path with another folder, and run "
            f"`{mlflow_program()} db upgrade sqlite:///{db}` on the old file to try to recover its runs.")


def open_sqlite_store(uri: str, db: Path):
    """An ``MlflowClient`` on an sqlite store, created or upgraded by one process at a time.

    MLflow creates a new store by running its migrations; two processes doing that at once on one
    file kill one of them ("table _alembic_tmp_tags already exists") and can leave it half-migrated.
    Under a file lock beside the store, the first process creates it and the others find it done; a
    store left half-migrated by a killed process is finished here, else the error says what to do.
    """
    from filelock import FileLock, Timeout
    from mlflow.tracking import MlflowClient

    db.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(store_lock_path(db)), timeout=STORE_LOCK_TIMEOUT_S)
    try:
        with lock:
            try:
                _repair_half_migrated(uri, db)
                client = MlflowClient(tracking_uri=uri)
                client.search_experiments(max_results=1)  # creates or checks the schema now, under the lock
            except Exception as exc:
                if "database is locked" in str(exc):  # busy, not broken: moving it aside would be the wrong advice
                    raise TLError(f"The results store {db} stayed locked by another process's write for longer "
                                  "than MLflow waits (20 s); let the other job finish its write and run this "
                                  "again.") from exc
                raise TLError(half_created_message(db, exc)) from exc
    except Timeout:
        raise TLError(f"Another process has been creating or upgrading the results store {db} for over "
                      f"{STORE_LOCK_TIMEOUT_S:.0f} s; wait for it to finish (or stop it) and run the command "
                      "again.") from None
    return client
