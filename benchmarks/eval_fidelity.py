"""Fidelity matrix: PSNR-Y / SSIM-Y of bicubic and every named x4 model on held-out photos, under
degradation families that were not all designed by us, with the per-image spread.

    python benchmarks/eval_fidelity.py                         # every named x4 model
    python benchmarks/eval_fidelity.py --model esrgan --model runs/capture-esrgan/checkpoints
    python benchmarks/eval_fidelity.py --family capture-h264 --images 3
    python benchmarks/eval_fidelity.py --model srflow --tau 0 --tau 0.4 --tau 0.8 --picture sweep.png
    python benchmarks/eval_fidelity.py --model esrgan --ensemble 8                 # self-ensemble gain and cost
    python benchmarks/eval_fidelity.py --model A --model B --holdout-of pipelines/photos-esrgan.yml  # choose
    python benchmarks/eval_fidelity.py --model A --holdout-of pipelines/photos-esrgan.yml --draws 3  # 3 draws each
    python benchmarks/eval_fidelity.py --model compact --corpus runs/corpus --family vhs   # per kind of content

Families (x4, each image its own fixed draw; --draws N adds N-1 more):
  vhs           ours, as esrgan-vhs was trained (pipelines/vhs-esrgan.yml's degradation)
  wide          ours, the wide model (vsr.train.degrade defaults: kernels, tape noise, codecs, ...)
  bicubic-jpeg  antialiased bicubic downscale (MATLAB imresize-like) + JPEG quality 75
  capture-h264  optics blur (Gaussian 0.8 px), area downscale, H.264 CRF 26 (4:2:0), as a capture card
  heavy-noise   bilinear downscale, Gaussian RGB noise sigma 10/255, JPEG quality 85
Ground truth: centre 640 px crops of pipelines/vhs-esrgan.yml's held-out photos at half size (or, with
--holdout-of RECIPE, that recipe's: choose on those, report on these; with --corpus DIR, every image of
DIR/holdout (benchmarks/corpus.py), at half size where its shorter side is 768 px or more, and a table per kind
of content); metrics on Y, border 4.
With two models or more, a second table gives each one's difference to the first, paired (same images, same
draws), as mean +- standard error over the images: a lead inside two standard errors is not one.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vsr import images, metrics, zoo  # noqa: E402
from vsr.engine import Upscaler  # noqa: E402
from vsr.train import capture  # noqa: E402
from vsr.train.config import load_recipe  # noqa: E402
from vsr.train.data import load_frames, prescale, validation_set  # noqa: E402
from vsr.train.degrade import DegradeConfig, Degradation, jpeg  # noqa: E402
from eval_esrgan import data_dir, load_model  # noqa: E402  (benchmarks/ is on the path)

SCALE = 4


def corpus_truth(folder: Path, crop: int) -> list[tuple[str, np.ndarray]]:
    """(name, ground truth) of every image in ``folder``: at half size where the shorter side is 768 px or more
    (most are JPEGs), the centre ``crop`` px (a multiple of the scale)."""
    out = []
    for path in sorted(folder.iterdir()):
        img = prescale(images.to_rgb8(images.read_image(path)), 0.5, min_side=768)  # as corpus-compact.yml
        h, w = (min(d, crop) // SCALE * SCALE for d in img.shape[:2])
        y, x = (img.shape[0] - h) // 2, (img.shape[1] - w) // 2
        out.append((path.stem, np.ascontiguousarray(img[y:y + h, x:x + w])))
    return out


def per_kind(table: dict, runners: list[str], families: list[str], names: list[str]) -> None:
    """Gain over bicubic per kind of content (benchmarks/corpus.tsv), mean +- paired standard error."""
    import corpus

    kinds = {r["name"]: corpus.kinds(r) for r in corpus.rows()}
    def kinds_of(name: str) -> list[str]:  # a video's frames are NAME-NNNN; shared photos have no kinds listed
        return kinds.get(name) or kinds.get(name.rsplit("-", 1)[0]) or ["shared"]
    for fam in families:
        print(f"\n{fam}: PSNR-Y gain over bicubic by kind, mean +- paired standard error (images)")
        print(f"{'kind':<14}{'images':>7}" + "".join(f"{r[-22:]:>24}" for r in runners[1:]))
        for kind in corpus.KINDS + ("other", "shared"):
            idx = [i for i, n in enumerate(names) if kind in kinds_of(n)]
            if len(idx) < 2:
                continue
            cells = []
            for r in runners[1:]:
                d = np.subtract(table[(r, fam)][0], table[("bicubic", fam)][0])[idx]
                cells.append(f"{d.mean():+6.2f} +- {d.std(ddof=1) / np.sqrt(len(d)):.2f}")
            print(f"{kind:<14}{len(idx):>7}" + "".join(f"{c:>24}" for c in cells))


def bicubic_jpeg(hq: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    t = torch.from_numpy(hq).permute(2, 0, 1)[None].float()
    lq = F.interpolate(t, scale_factor=1 / SCALE, mode="bicubic", antialias=True, align_corners=False)
    lq = lq.round().clamp(0, 255)[0].permute(1, 2, 0).numpy().astype(np.uint8)
    return jpeg(lq, 75)


def capture_h264(hq: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    blurred = cv2.GaussianBlur(hq, (0, 0), sigmaX=0.8 * SCALE)
    lq = cv2.resize(blurred, (hq.shape[1] // SCALE, hq.shape[0] // SCALE), interpolation=cv2.INTER_AREA)
    return capture.codec_roundtrip([lq], "h264", (38 - 26) / 22)[0]


def heavy_noise(hq: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    lq = cv2.resize(hq, (hq.shape[1] // SCALE, hq.shape[0] // SCALE), interpolation=cv2.INTER_LINEAR)
    noisy = lq.astype(np.float32) + rng.normal(0, 10, lq.shape).astype(np.float32)
    return jpeg(np.clip(noisy + 0.5, 0, 255).astype(np.uint8), 85)


def ours(cfg: DegradeConfig):
    d = Degradation(config=cfg, scale=SCALE)
    return lambda hq, rng: d(hq, d.sample(rng), rng)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", help="model name, weights file or checkpoint folder (repeatable)")
    ap.add_argument("--family", action="append", help="only these families (repeatable)")
    ap.add_argument("--images", type=int, default=5)
    ap.add_argument("--draws", type=int, default=1,
                    help="degrade each image this many times (different draws of each family); more cases, less "
                         "luck of one draw")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--tau", type=float, action="append",
                    help="temperatures for sampled models such as srflow (repeatable; default 0), seed 0")
    ap.add_argument("--ensemble", type=int, choices=[4, 8],
                    help="also score each plain model with this self-ensemble (and print its time)")
    ap.add_argument("--holdout-of", type=Path, metavar="RECIPE",
                    help="score on this recipe's held-out photos instead of the matrix's: a validation set for "
                         "choosing between models (e.g. pipelines/photos-esrgan.yml; run from the repository root)")
    ap.add_argument("--corpus", type=Path, metavar="DIR",
                    help="score on DIR/holdout (benchmarks/corpus.py's output), also per kind of content")
    ap.add_argument("--picture", type=Path,
                    help="also write a PNG: a crop of the first image under the first family, one panel per row")
    args = ap.parse_args()
    photos = data_dir() / "photos"
    if not photos.is_dir():
        print(f"skipped: {photos} not found (set VSR_DATA)")
        return 0
    vhs = load_recipe(ROOT / "pipelines" / "vhs-esrgan.yml", **{"data.frames": str(photos)})
    families = {"vhs": ours(vhs.data.degradation), "wide": ours(DegradeConfig()), "bicubic-jpeg": bicubic_jpeg,
                "capture-h264": capture_h264, "heavy-noise": heavy_noise}
    families = {k: v for k, v in families.items() if not args.family or k in args.family}
    held_of = vhs if args.holdout_of is None else load_recipe(args.holdout_of)
    held_of.eval.max_images = args.images
    if args.corpus:
        truth = corpus_truth(args.corpus / "holdout", held_of.eval.crop)
        print(f"{len(truth)} held-out images of {args.corpus}; centre {held_of.eval.crop} px")
    else:
        _, held = load_frames(held_of.data, scale=SCALE)
        truth = [(name, hq) for name, _, hq in validation_set(held, cfg=held_of.data, ev=held_of.eval, scale=SCALE)]
        print(f"{len(truth)} held-out photos: {', '.join(n for n, _ in truth)}; centre {held_of.eval.crop} px at "
              f"{held_of.data.prescale:g} of their size")
    # case (image i, draw k): draw 0 is the image's fixed draw, the others add k to the seed
    n_images = len(truth)
    cases = [(i, k) for i in range(n_images) for k in range(max(1, args.draws))]
    lqs = {f: [fn(truth[i][1], np.random.default_rng([1234, i] + [k] * (k > 0))) for i, k in cases]
           for f, fn in families.items()}
    truth = [truth[i] for i, _ in cases]

    specs = args.model or sorted(n for n, c in zoo.cards().items() if c.scale == SCALE)
    runners: list[tuple[str, object]] = [("bicubic", None)]
    for spec in specs:
        desc = load_model(spec)
        if desc.contract != "sampled":
            runners.append((spec, Upscaler(desc, device="cpu", precision=args.precision, tile=0)))
            if args.ensemble and desc.contract == "plain":
                runners.append((f"{spec} x{args.ensemble}", Upscaler(desc, device="cpu", precision=args.precision,
                                                                    tile=0, ensemble=args.ensemble)))
            continue
        for tau in args.tau or [0.0]:
            runners.append((f"{spec} tau {tau:g}", Upscaler(desc, device="cpu", precision=args.precision, tile=0,
                                                            temperature=tau, seed=0)))
    torch.set_grad_enabled(False)
    table: dict[tuple[str, str], tuple[list[float], list[float]]] = {}
    panels = [truth[0][1]]  # the picture: ground truth, then each runner on the first image and family
    for name, up in runners:
        t0 = time.perf_counter()
        for fam, lq_list in lqs.items():
            p, s = [], []
            for lq, (_, hq) in zip(lq_list, truth):
                if up is None:
                    out = cv2.resize(lq, (lq.shape[1] * SCALE, lq.shape[0] * SCALE), interpolation=cv2.INTER_CUBIC)
                else:
                    out = up.upscale_array(lq[None])[0]
                if len(p) == 0 and fam == next(iter(lqs)):
                    panels.append(out)
                p.append(metrics.psnr(out, hq, border=SCALE))
                s.append(metrics.ssim(out, hq, border=SCALE))
            table[(name, fam)] = (p, s)
        print(f"  {name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)

    over = "images" if args.draws <= 1 else f"images x {args.draws} draws"
    print(f"\nPSNR-Y dB, mean [min..max over {over}] (SSIM-Y mean); delta = against bicubic")
    print(f"{'model':<28}" + "".join(f"{f:>30}" for f in lqs))
    for name, _ in runners:
        cells = []
        for fam in lqs:
            p, s = table[(name, fam)]
            d = np.mean(p) - np.mean(table[("bicubic", fam)][0])
            cells.append(f"{np.mean(p):6.2f} [{min(p):5.2f}..{max(p):5.2f}] {d:+5.2f} ({np.mean(s):.3f})")
        print(f"{name[-28:]:<28}" + "".join(f"{c:>30}" for c in cells))
    if len(runners) > 2 and n_images > 1:  # paired: the same images and draws, so the photos' own spread cancels
        first = runners[1][0]
        print(f"\nPSNR-Y dB against {first}, paired: mean difference +- standard error over the images (each the mean"
              f" of its {max(1, args.draws)} draw(s))")
        for name, _ in runners[2:]:
            per_image = [np.subtract(table[(name, fam)][0], table[(first, fam)][0]).reshape(n_images, -1).mean(1)
                         for fam in lqs]
            cells = [f"{d.mean():+6.3f} +- {d.std(ddof=1) / np.sqrt(len(d)):.3f}" for d in per_image]
            print(f"{name[-28:]:<28}" + "".join(f"{c:>30}" for c in cells))
    if args.corpus:
        per_kind(table, [n for n, _ in runners], list(lqs), [n for n, _ in truth])  # one a case
    if args.picture:
        write_picture(args.picture, panels, ["ground truth"] + [n for n, _ in runners], next(iter(lqs)))
    return 0


def write_picture(path: Path, panels: list[np.ndarray], labels: list[str], family: str, size: int = 192) -> None:
    """Side by side: the same centre crop of each panel, 2x nearest so that texture is visible, labelled."""
    h, w = panels[0].shape[:2]
    y, x = (h - size) // 2, (w - size) // 2
    tiles = []
    for img, label in zip(panels, labels):
        tile = cv2.resize(np.ascontiguousarray(img[y:y + size, x:x + size]), (2 * size, 2 * size),
                          interpolation=cv2.INTER_NEAREST)
        tile = np.concatenate([np.full((28, 2 * size, 3), 255, np.uint8), tile], axis=0)
        cv2.putText(tile, label[-30:], (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
        tiles.append(tile)
    images.write_image(path, np.concatenate(tiles, axis=1))
    print(f"wrote {path} ({family}, {labels[0]} then {', '.join(labels[1:])})")


if __name__ == "__main__":
    sys.exit(main())
