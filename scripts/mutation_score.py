"""Score one mutmut target: read mutmut's result files in a target's folder, keep the mutants of the
target's functions, count them by status and list the survivors with their diffs.

Used by scripts/mutation.sh; run from a target folder (``.mutation/<name>``)::

    python scripts/mutation_score.py NAME GLOB [GLOB ...]

Killed = a test failed (or the mutant hung past mutmut's CPU limit: a timeout is a detection).
The score is killed / all mutants of the selected functions; "no tests" counts against it.
"""

from __future__ import annotations

import fnmatch
import json
import sys
from collections import Counter
from pathlib import Path

STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped", 36: "timeout",
          -24: "timeout", 24: "timeout", 152: "timeout", 255: "timeout", 37: "type check", None: "not checked"}
DETECTED = {"killed", "timeout", "type check"}


def results(globs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for meta in Path("mutants").rglob("*.py.meta"):
        for key, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            if any(fnmatch.fnmatchcase(key, g) for g in globs):
                out[key] = STATUS.get(code, "suspicious")
    return out


def main(argv: list[str]) -> int:
    name, globs = argv[0], argv[1:]
    found = results(globs)
    counts = Counter(found.values())
    total = len(found)
    detected = sum(counts[s] for s in DETECTED)
    score = 100.0 * detected / total if total else 0.0
    detail = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    line = f"{name:<12} {detected:>4}/{total:<4} killed  {score:5.1f} %   ({detail})"
    survivors = sorted(k for k, s in found.items() if s not in DETECTED)
    from mutmut.mutation.diff_apply import find_mutant, get_diff_for_mutant  # what `mutmut show` prints, in-process

    with open("survivors.txt", "w") as f:
        for key in survivors:
            f.write(f"# {key}: {found[key]}\n{get_diff_for_mutant(key, path=find_mutant(key).path)}\n\n")
    Path("score.txt").write_text(line + "\n")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
