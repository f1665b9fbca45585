"""The network on a CPU whose cores are shared: frames per second alone, with one core kept busy by another
process, and with two jobs at once, for each backend and thread wait policy.

    python benchmarks/bench_shared_cores.py [--model compact] [--size 240x180] [--seconds 10]

Each measurement runs in its own process (a wait policy is read when the threading library loads):
- torch: PyTorch fp32 through the engine (`--backend torch`), as vsr runs it (OMP_WAIT_POLICY=PASSIVE:
  waiting threads sleep), and with OpenMP's default wait (threads spin a while before they sleep)
- openvino: OpenVINO fp32 through the engine; threads pinned to cores (its default) or not

"busy core": a process spinning on core 0; a fair share of the machine is then (cores - 0.5) / cores of
the idle speed. "two jobs": the same measurement twice at once; a fair share is half each.
Prints one row per variant: idle frames/s and, as ratios of it, the busy-core and two-job speeds.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

VARIANTS = {  # name: (backend, environment, engine settings)
    "torch": ("torch", {}, {}),  # vsr sets OMP_WAIT_POLICY=PASSIVE (vsr/__init__.py)
    "torch, OpenMP's default wait": ("torch", {"OMP_WAIT_POLICY": ""}, {}),  # spins a while, then sleeps
    "openvino": ("openvino", {}, {}),
    "openvino, not pinned": ("openvino", {}, {"ENABLE_CPU_PINNING": False}),
}


def worker(args: argparse.Namespace) -> None:
    """Frames per second of one engine on random frames, after a warm-up; printed as JSON."""
    from vsr import zoo  # before torch, as the vsr command imports them
    from vsr.engine import Upscaler

    import torch

    w, h = map(int, args.size.split("x"))
    engine = Upscaler(zoo.resolve(args.model)[0], device="cpu", precision="fp32", backend=args.backend, tile=0)
    config = json.loads(args.config or "{}")
    if config:  # OpenVINO settings, read when a shape is compiled
        engine.model._config.update(config)
    x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    engine(x)  # compiles (OpenVINO) and warms up
    times = []
    end = time.perf_counter() + args.seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        engine(x)
        times.append(time.perf_counter() - t0)
    print(json.dumps({"fps": 1 / statistics.median(times), "frames": len(times)}))


def measure(args: argparse.Namespace, variant: str, copies: int = 1) -> list[float]:
    backend, env, config = VARIANTS[variant]
    cmd = [sys.executable, __file__, "--worker", "--backend", backend, "--model", args.model, "--size", args.size,
           "--seconds", str(args.seconds), "--config", json.dumps(config)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, **env})
             for _ in range(copies)]
    return [json.loads(p.communicate()[0].strip().splitlines()[-1])["fps"] for p in procs]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="compact")
    p.add_argument("--size", default="240x180", help="input frame WxH")
    p.add_argument("--seconds", type=float, default=10.0, help="timed seconds per measurement")
    p.add_argument("--variants", default="|".join(VARIANTS), help="|-separated list of: " + " | ".join(VARIANTS))
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--backend", help=argparse.SUPPRESS)
    p.add_argument("--config", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    cores = len(os.sched_getaffinity(0))
    print(f"{cores} cores, {args.model} at {args.size}, fp32, {args.seconds:g} s per measurement")
    print(f"{'variant':34s} {'idle fps':>9s} {'busy core':>10s} {'two jobs (each)':>16s}")
    for variant in args.variants.split("|"):
        idle = measure(args, variant)[0]
        spinner = subprocess.Popen([sys.executable, "-c", "import os\nos.sched_setaffinity(0, {0})\nwhile True: pass"])
        try:
            busy = measure(args, variant)[0]
        finally:
            spinner.kill()
            spinner.wait()
        two = measure(args, variant, copies=2)
        print(f"{variant:34s} {idle:9.2f} {busy / idle:9.2f}x {' '.join(f'{f / idle:.2f}x' for f in two):>16s}",
              flush=True)
    print(f"fair shares: busy core {(cores - 0.5) / cores:.2f}x, two jobs 0.50x each")


if __name__ == "__main__":
    main()
