"""Where jobs run: the :class:`Executor` seam, today's in-process :class:`LocalExecutor`, and Ray
(:mod:`tlcore.executors.ray`, imported only when chosen). A new executor is one entry in ``EXECUTORS``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from tlcore.errors import SpecError
from tlcore.executors.base import Done, Executor, Outcome, Work, run_work
from tlcore.executors.local import LocalExecutor

__all__ = ["EXECUTORS", "EXECUTOR_ENV", "RAY_ADDRESS_ENV", "Done", "Executor", "LocalExecutor", "Outcome", "Work",
           "executor_from_env", "make_executor", "run_work"]

EXECUTOR_ENV = "TLCORE_EXECUTOR"
RAY_ADDRESS_ENV = "TLCORE_RAY_ADDRESS"

#: name -> what builds it from the options (``address``, ``cpus_per_run``, ``gpus_per_run``, ``max_retries``).
EXECUTORS = {"local": "tlcore.executors.local:LocalExecutor", "ray": "tlcore.executors.ray:make_ray_executor"}


def make_executor(name: str = "local", **options: Any) -> Executor:
    """The executor called ``name``; options the local executor does not take are refused by name."""
    import importlib

    if name not in EXECUTORS:
        raise SpecError(f"Unknown executor {name!r}: choose one of {', '.join(EXECUTORS)} (--executor, "
                        f"${EXECUTOR_ENV}).")
    module, attr = EXECUTORS[name].split(":")
    factory = getattr(importlib.import_module(module), attr)
    given = {k: v for k, v in options.items() if v is not None}
    if name == "local" and given:
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        raise SpecError(f"{flags} only appl{'ies' if len(given) == 1 else 'y'} to a cluster executor; add --executor "
                        "ray or drop them.")
    return factory(**given)


def executor_from_env(env: Mapping[str, str] | None = None) -> Executor:
    """The app's executor: ``$TLCORE_EXECUTOR`` (local by default) at ``$TLCORE_RAY_ADDRESS``."""
    env = os.environ if env is None else env
    name = (env.get(EXECUTOR_ENV) or "local").strip().lower()
    address = env.get(RAY_ADDRESS_ENV) or None
    if name == "local" and address:
        raise SpecError(f"${RAY_ADDRESS_ENV} is set but ${EXECUTOR_ENV} is not 'ray'; set {EXECUTOR_ENV}=ray to run "
                        "jobs on that cluster, or unset the address.")
    return make_executor(name, address=address) if name != "local" else make_executor(name)
