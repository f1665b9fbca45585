"""The training corpus's list (benchmarks/corpus.tsv, fetched by benchmarks/corpus.py): no file of the packages
kept for others' evaluation, every held-out group wholly held out, every kind present on both sides."""
from __future__ import annotations

import collections
import struct
import sys
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import corpus  # noqa: E402


def test_the_list_keeps_groups_together_and_every_kind_on_both_sides():
    rows = corpus.rows()
    assert len(rows) >= 300 and not {r["package"] for r in rows} & corpus.RESERVED
    sides = collections.defaultdict(set)
    for r in rows:
        sides[r["group"]].add(r["split"])
    assert all(len(s) == 1 for s in sides.values())
    for kind in corpus.KINDS:
        assert {r["split"] for r in rows if kind in corpus.kinds(r)} == {"train", "holdout"}, kind
    assert len({r["sha256"] for r in rows}) == len(rows)


def test_a_qt_resource_member_is_read_out(tmp_path):
    """A bundle of one folder holding one zlib-compressed file, laid out as Qt's rcc writes format 2."""
    payload = b"picture bytes" * 10

    def name(text: str) -> bytes:
        return struct.pack(">HI", len(text), 0) + text.encode("utf-16-be")

    names = name("res") + name("a.webp")
    packed = struct.pack(">I", len(payload)) + zlib.compress(payload)
    data = struct.pack(">I", len(packed)) + packed
    # nodes of 22 bytes: name offset, flags, then (folder) count and first child or (file) locale and data offset
    root = struct.pack(">IHII", 0, 2, 1, 1) + bytes(8)
    folder = struct.pack(">IHII", 0, 2, 1, 2) + bytes(8)
    file = struct.pack(">IHIII", len(name("res")), 1, 0, 0, 0) + bytes(4)
    tree = root + folder + file
    header_size = 20
    b = b"qres" + struct.pack(">IIII", 2, header_size, header_size + len(tree), header_size + len(tree) + len(data))
    path = tmp_path / "x.rcc"
    path.write_bytes(b + tree + data + names)
    assert corpus.rcc_member(path, "/res/a.webp") == payload


def test_prescale_leaves_pictures_below_its_minimum_side_as_they_are():
    import numpy as np

    from vsr.train.data import prescale

    big, small = np.zeros((800, 1000, 3), np.uint8), np.zeros((300, 400, 3), np.uint8)
    assert prescale(big, 0.5, 768).shape[:2] == (400, 500) and prescale(small, 0.5, 768).shape == small.shape
    assert prescale(small, 0.5).shape[:2] == (150, 200)
