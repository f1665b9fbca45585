"""The pictures in docs/models.md of `vsr srflow restore` and `vsr srflow transfer`, made by those commands on
256 px centre crops of two held-out photos at half size, with the restoration's PSNR printed.

    python benchmarks/srflow_pictures.py [--model srflow] [--out docs]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vsr import images, metrics  # noqa: E402
from vsr.cli import main as vsr  # noqa: E402
from eval_esrgan import data_dir  # noqa: E402  (benchmarks/ is on the path)


def crop(name: str, size: int = 256) -> np.ndarray:
    img = images.read_image(data_dir() / "photos" / name)
    img = cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA)
    y, x = (img.shape[0] - size) // 2, (img.shape[1] - size) // 2
    return np.ascontiguousarray(img[y:y + size, x:x + size])


def labelled(panels: list[tuple[str, np.ndarray]]) -> np.ndarray:
    tiles = []
    for label, img in panels:
        bar = np.full((24, img.shape[1], 3), 255, np.uint8)
        cv2.putText(bar, label, (6, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        tiles.append(np.concatenate([bar, img], axis=0))
    return np.concatenate(tiles, axis=1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="srflow")
    ap.add_argument("--out", type=Path, default=ROOT / "docs")
    args = ap.parse_args()
    cups, leaf = crop("plasma-ColorfulCups.jpg"), crop("plasma-FallenLeaf.jpg")
    noisy = np.clip(cups + np.random.default_rng(0).normal(0, 12, cups.shape) + 0.5, 0, 255).astype(np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        for name, img in (("noisy.png", noisy), ("cups.png", cups), ("leaf.png", leaf)):
            images.write_image(t / name, img)
        common = ["--model", args.model, "--device", "cpu"]
        assert vsr(["srflow", "restore", str(t / "noisy.png"), "-o", str(t / "restored.png"), *common]) == 0
        assert vsr(["srflow", "transfer", str(t / "leaf.png"), str(t / "cups.png"), "-o", str(t / "moved.png"),
                    *common]) == 0
        restored, moved = images.read_image(t / "restored.png"), images.read_image(t / "moved.png")
    before, after = metrics.psnr(noisy, cups), metrics.psnr(restored, cups)
    print(f"restore: noise sigma 12: {before:.2f} dB -> {after:.2f} dB PSNR-Y against the clean crop")
    args.out.mkdir(parents=True, exist_ok=True)
    images.write_image(args.out / "srflow-restore.png", labelled(
        [(f"noisy ({before:.1f} dB)", noisy), (f"vsr srflow restore ({after:.1f} dB)", restored), ("clean", cups)]))
    images.write_image(args.out / "srflow-transfer.png", labelled(
        [("A: leaf", leaf), ("B: cups", cups), ("vsr srflow transfer A B", moved)]))
    print(f"wrote {args.out / 'srflow-restore.png'} and {args.out / 'srflow-transfer.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
