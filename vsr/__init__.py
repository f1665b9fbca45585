import os

__version__ = "0.1.0"

# PyTorch's OpenMP threads sleep while they wait for each other instead of spinning: on cores shared with
# another process (or another vsr job) spinning threads take the time the working ones need
# (benchmarks/bench_shared_cores.py, three runs: beside a busy core 0.33-0.40x of the idle speed spinning,
# 0.51-0.58x sleeping; two jobs at once 0.29-0.39x each spinning, 0.48-0.57x sleeping; idle speed the same
# in two runs, 9% lower in one).
# OpenMP reads it when it loads, so it is set before torch is imported; a value in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
