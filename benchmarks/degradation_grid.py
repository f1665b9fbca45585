"""A picture of the degradation model: one held-out photo crop, the clean ground truth and 11 draws of
the default (wide) model, each labelled with its kernel, codec and deinterlacer.

    python benchmarks/degradation_grid.py [-o docs/degradation-draws.png] [--seed 0]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from eval_esrgan import data_dir  # noqa: E402
from vsr.images import read_image, to_rgb8, write_image  # noqa: E402
from vsr.train.degrade import DegradeConfig, Degradation  # noqa: E402

CELL = 256  # each draw is shown at the ground truth's size (nearest neighbour)


def label(img: np.ndarray, text: str) -> np.ndarray:
    img = img.copy()
    cv2.rectangle(img, (0, 0), (CELL, 18), (0, 0, 0), -1)
    cv2.putText(img, text, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", type=Path, default=ROOT.parent / "docs" / "degradation-draws.png")
    ap.add_argument("--photo", default="plasma-ColorfulCups.jpg")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    path = data_dir() / "photos" / args.photo
    if not path.is_file():
        print(f"skipped: {path} not found (set VSR_DATA)")
        return 0
    img = to_rgb8(read_image(path))
    img = cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA)
    y, x = (img.shape[0] - CELL) // 2, (img.shape[1] - CELL) // 2
    hq = np.ascontiguousarray(img[y:y + CELL, x:x + CELL])
    d = Degradation(config=DegradeConfig(interlace=0.3), scale=4)
    cells = [label(hq, "ground truth")]
    for i in range(11):
        rng = np.random.default_rng([args.seed, i])
        p = d.sample(rng)
        lq = d(hq, p, rng)
        big = cv2.resize(lq, (CELL, CELL), interpolation=cv2.INTER_NEAREST)
        deint = f" {p.deinterlace}" if p.interlace else ""
        cells.append(label(big, f"{p.downscale} {p.codec}{deint} n{p.luma_noise + p.tape_noise:.2f}"))
    rows = [np.concatenate(cells[r * 4:(r + 1) * 4], axis=1) for r in range(3)]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_image(args.output, np.concatenate(rows, axis=0))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
