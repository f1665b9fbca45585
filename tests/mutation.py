"""Mutation testing of the modules where a silent bug loses a user's work or picture.

    python tests/mutation.py [checkpoint resume mux tiling weights arch]

mutmut (``pip install -e .[mutation]``; setup.cfg's [mutmut] names the modules and the tests) changes the code
in small ways, one mutant at a time under ``nice``, runs the tests that reach the changed function, and this
prints killed/total per module. Slow (tens of minutes), so not part of the default test run; afterwards
``mutmut results`` lists the survivors and ``mutmut show NAME`` shows one.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULES = {"checkpoint": "vsr/train/checkpoint.py", "resume": "vsr/video/resume.py", "mux": "vsr/video/mux.py",
           "tiling": "vsr/engine/tiling.py", "weights": "vsr/weights.py", "arch": "vsr/arch/__init__.py"}
# mutmut's exit codes where the tests noticed: a failure, pytest's internal error, a timeout or a crash
NOTICED = {1, 3, 24, -24, 152, 255, 36, -11, -9, 37}


def summary(path: str) -> tuple[int, int]:
    codes = json.loads((ROOT / "mutants" / (path + ".meta")).read_text())["exit_code_by_key"].values()
    return sum(c in NOTICED for c in codes), len(codes)


def main(names: list[str]) -> int:
    unknown = set(names) - set(MODULES)
    if unknown:
        print(f"unknown module(s) {sorted(unknown)}; choose from {' '.join(MODULES)}", file=sys.stderr)
        return 2
    names = names or list(MODULES)
    # mutants/ holds the mutated copy and mutmut's cache: start afresh so changed tests count
    shutil.rmtree(ROOT / "mutants", ignore_errors=True)
    (ROOT / "mutants").mkdir()  # it must exist when Python starts, or it is skipped on sys.path
    # subprocesses the tests start (the CLI) import the mutated copy too; one thread: a fair share of the CPU
    env = {**os.environ, "PYTHONPATH": str(ROOT / "mutants"), "OMP_NUM_THREADS": "1"}
    for name in names:
        pattern = MODULES[name][:-3].replace("/__init__", "").replace("/", ".") + ".x*"
        with open(f"/tmp/mutmut-{ROOT.name}-{name}.log", "w") as log:
            subprocess.run(["nice", "-n", "10", sys.executable, "-m", "mutmut", "run", "--max-children", "1",
                            pattern], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
        killed, total = summary(MODULES[name])
        print(f"{MODULES[name]:24} killed {killed:4} / {total:4}  ({100 * killed / max(total, 1):.0f}%)",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
