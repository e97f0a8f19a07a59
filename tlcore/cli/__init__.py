"""``python -m tlcore``: the command line over the same ``experiments.run`` the app uses.

The method commands accept the flags of the two research tools the product comes from
(tl-tradeoff's ``feature_extraction.py`` / ``fine_tuning.py`` and QUANTA's ``quanta.py``).
User errors print one line on stderr and exit 2, with no traceback unless ``--debug``.
Heavy imports (torch, mlflow) happen inside the commands, so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence

from tlcore.cli import methods, tools
from tlcore.cli.args import common_parent

EXIT_USER_ERROR = 2
EXIT_BUG = 1
EXIT_CANCELLED = 130



def build_parser() -> argparse.ArgumentParser:

    common = common_parent()
    parser = argparse.ArgumentParser(
        prog="python -m tlcore", parents=[common],
        description="TL Lab: feature extraction, fine-tuning and QUANTA on pretrained vision backbones, "
                    "with cost (time, FLOPs, energy, CO2) recorded in MLflow.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    tools.add_commands(sub, common)
    methods.add_method_commands(sub, common)
    tools.add_late_commands(sub, common)
    return parser


def _one_line(exc: BaseException) -> str:
    """A user error's sentence; one re-raised by a DataLoader worker carries the worker's traceback
    in its text, and its own message is then the last line."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    if len(lines) > 1 and any("Traceback" in line for line in lines):
        last = lines[-1]
        return last.split(": ", 1)[1] if last.split(": ", 1)[0].endswith("Error") else last
    return " ".join(lines)


def _fail_orphaned_runs(args: argparse.Namespace) -> list[str]:
    """Mark FAILED the runs whose owner process is dead, with the reason, as the app does at start-up:
    a command killed while it ran (a sweep stopped with kill -9, a closed terminal) left them RUNNING."""
    if not hasattr(args, "mlflow_path"):
        return []  # a command that opens no results store
    import logging

    from tlcore.errors import TLError
    from tlcore.tracking import Tracker

    try:
        tracker = Tracker(args.mlflow_path)
        failed = tracker.fail_orphaned_runs()
    except TLError:
        raise
    except Exception as exc:  # a store we cannot sweep is not a reason to refuse the command
        logging.getLogger(__name__).warning("Could not check for runs left RUNNING in the results store: %s", exc)
        return []
    if failed:
        print(f"Marked {len(failed)} run{'s' if len(failed) > 1 else ''} left RUNNING by a process that has ended as "
              f"FAILED (their 'error' tag says why): {', '.join(failed)}.", file=sys.stderr)
    return failed


def _stop_cleanly_on_sigterm():
    """``kill PID`` (SIGTERM) stops a command like Ctrl-C: its runs end KILLED instead of staying RUNNING.
    Returns the handler it replaced (restored when :func:`main` returns), or None."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def stop(signum, frame):
        raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGTERM, stop)
    except (ValueError, OSError):
        return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USER_ERROR
    os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")
    from tlcore.errors import Cancelled, TLError

    previous = None if getattr(args, "dry_run", False) else _stop_cleanly_on_sigterm()
    try:
        _fail_orphaned_runs(args)
        return int(args.func(args) or 0)
    except TLError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except (Cancelled, KeyboardInterrupt):
        print("cancelled: the run was stopped and is marked KILLED in MLflow.", file=sys.stderr)
        return EXIT_CANCELLED
    except BrokenPipeError:  # `python -m tlcore backbones | head`: the reader had enough, not a bug
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush cannot fail again
        return 0
    except Exception as exc:  # a bug: say so in one line, the traceback behind --debug
        if args.debug:
            traceback.print_exc()
        first = str(exc).splitlines()[0] if str(exc) else ""
        print(f"error: unexpected {type(exc).__name__}: {first} (run with --debug for the traceback; this is "
              "a bug, please report it)", file=sys.stderr)
        return EXIT_BUG
    finally:
        if previous is not None:
            import signal

            signal.signal(signal.SIGTERM, previous)
