"""Training photographs for pipelines/photos-esrgan.yml: the 18 photos of ../shared/data/photos that the fidelity
matrix (benchmarks/eval_fidelity.py) does not hold out, and 26 more real photographs from three Debian 12
wallpaper packages, fetched with `apt-get download` (run `apt-get update` first) and unpacked with
`dpkg-deb -x`. Drawings, renders and logos in those packages are left out; so is every file of
../shared/data/photos (by content), so the matrix's held-out photos can never be trained on. Licences (each
package's copyright file): mate-backgrounds' nature photos GPL-2+ and CC, lomiri's CC-BY(-SA) 3.0/4.0.

    python benchmarks/training_photos.py                  # writes runs/photos/ (44 images; the shared ones linked)
"""
from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# benchmarks/eval_fidelity.py's ground truth (the recipes' data.holdout): never trained on
MATRIX = {"plasma-ColorfulCups.jpg", "plasma-Path.jpg", "lxqt-flowers.png", "plasma-FallenLeaf.jpg", "lxqt-fog.jpg"}

PACKAGES = {  # package=version: (prefix, folder in the package, photographs)
    "mate-backgrounds=1.26.0-1": ("mate", "usr/share/backgrounds/mate/nature", [
        "Aqua.jpg", "Blinds.jpg", "Dune.jpg", "FreshFlower.jpg", "Garden.jpg", "GreenMeadow.jpg", "LadyBird.jpg",
        "RainDrops.jpg", "Storm.jpg", "TwoWings.jpg", "Wood.jpg", "YellowFlower.jpg"]),
    "lomiri-wallpapers-16.04=20.04.0-2": ("lomiri", "usr/share/backgrounds", [
        "Bridge_by_Sander_Klootwijk.jpg", "Dragonfly_by_Bolly.jpg", "Picture_0B_by_freespace.jpg",
        "Picture_1A_by_freespace.jpg", "Wine_by_Jakkub_Mede.jpg", "aitzgorri_by_Aitzol_Berasategi.jpg",
        "analogpattern_by_Peter_Nerlich.jpg", "free_by_Peter_Nerlich.jpg", "friends_by_Aitzol_Berasategi.jpg",
        "life_by_Aitzol_Berasategi.jpg", "picosdeeuropa_by_Aitzol_Berasategi.jpg",
        "seeding_by_Clements_Engelhardt.jpg", "sunset_by_Aitzol_Berasategi.jpg"]),
    "lomiri-wallpapers-20.04=20.04.0-2": ("lomiri", "usr/share/backgrounds", [
        "Infinite-Sea_by_Aury88.jpg"]),
}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "photos")
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data" / "photos")
    args = ap.parse_args()
    if not args.shared.is_dir():
        print(f"error: {args.shared} is not a folder; give the shared photos with --shared", file=sys.stderr)
        return 2
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        print("error: apt-get and dpkg-deb are needed (a Debian or Ubuntu machine)", file=sys.stderr)
        return 2
    shared = sorted(p for p in args.shared.iterdir() if p.is_file())
    known = {sha256(p) for p in shared}
    tmp_out = args.out.with_name(args.out.name + ".partial")
    shutil.rmtree(tmp_out, ignore_errors=True)
    tmp_out.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for pkg, (prefix, folder, names) in PACKAGES.items():
            r = subprocess.run(["apt-get", "download", "-q", pkg], cwd=tmp, capture_output=True, text=True)
            if r.returncode != 0:
                msg = (r.stderr.strip().splitlines() or ["failed"])[-1]
                print(f"error: apt-get download {pkg}: {msg} (run `apt-get update` first)", file=sys.stderr)
                return 1
            deb = next(tmp.glob(pkg.split("=")[0] + "_*.deb"))
            subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp / "x")], check=True)
            for name in names:
                src = tmp / "x" / folder / name
                if sha256(src) in known:
                    print(f"error: {src.name} of {pkg} is already in {args.shared}", file=sys.stderr)
                    return 1
                shutil.copyfile(src, tmp_out / f"{prefix}-{name}")
            deb.unlink()
    for p in shared:
        if p.name not in MATRIX:
            (tmp_out / p.name).symlink_to(p.resolve())
    shutil.rmtree(args.out, ignore_errors=True)
    tmp_out.rename(args.out)
    fetched = sum(len(names) for _, _, names in PACKAGES.values())
    print(f"{args.out}: {len(list(args.out.iterdir()))} photographs ({fetched} from Debian's wallpaper packages)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
