"""The resume manifest and its work folder: what survives a kill, what is redone, what is never mixed."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess

import pytest

from vsr.errors import VsrError
from vsr.video import resume
from vsr.video.resume import MANIFEST, Manifest, SegmentRecord

ID = {"input": {"path": "/in.mkv", "size": 10}, "scale": 2, "window": (3, 4)}


def segment(work, i: int, frames: int = 10, size: int = 100) -> SegmentRecord:
    name = f"seg_{i:05d}.mkv"
    (work / name).write_bytes(bytes([i]) * size)
    return SegmentRecord(file=name, frames=frames, size=size, first_pts=i * frames, last_pts=i * frames + frames - 1)


def on_disk(work) -> dict:
    return json.loads((work / MANIFEST).read_text())


def test_names_beside_the_output(tmp_path):
    out = tmp_path / "film.mkv"
    assert resume.work_dir_for(out) == tmp_path / ".film.mkv.vsr-work"
    assert resume.lock_path_for(out) == tmp_path / ".film.mkv.vsr-lock"


def test_new_work_folder_has_an_empty_manifest(tmp_path):
    work = tmp_path / "w"
    m = Manifest.open(work=work, identity=ID)
    assert m.note is None and m.segments == [] and m.frames == 0 and m.adopted == 0
    assert m.identity == {"input": {"path": "/in.mkv", "size": 10}, "scale": 2, "window": [3, 4]}
    assert on_disk(work) == {"version": resume.VERSION, "identity": m.identity, "layout": None, "end": None,
                             "segments": []}
    assert sorted(os.listdir(work)) == [MANIFEST]  # the temporary file was renamed


def test_finished_segments_are_kept_and_counted(tmp_path):
    work = tmp_path / "w"
    m = Manifest.open(work=work, identity=ID)
    m.layout = {"size": [64, 48]}
    recs = [segment(work, i, frames=10 + i) for i in range(3)]
    for r in recs:
        m.add(r)
    m.end = {"frames": m.frames}
    m.save()
    (work / "seg_00003.mkv").write_bytes(b"killed mid-write")  # not vouched for: deleted
    (work / "junk").mkdir()
    again = Manifest.open(work=work, identity=dict(ID))
    assert again.segments == recs and again.frames == 33 and again.layout == {"size": [64, 48]}
    assert again.end == {"frames": 33}
    assert again.note == f"resuming: 33 frames in 3 segments were already done ({work.name})"
    assert sorted(os.listdir(work)) == [MANIFEST] + [r.file for r in recs]


@pytest.mark.parametrize("damage", ["size", "missing"])
def test_a_damaged_segment_and_the_ones_after_it_are_redone(tmp_path, damage):
    work = tmp_path / "w"
    m = Manifest.open(work=work, identity=ID)
    recs = [segment(work, i) for i in range(4)]
    for r in recs:
        m.add(r)
    m.end = {"frames": 40}
    m.save()
    if damage == "size":
        (work / recs[1].file).write_bytes(b"short")
    else:
        (work / recs[1].file).unlink()
    again = Manifest.open(work=work, identity=ID)
    assert again.segments == recs[:1] and again.end is None
    assert sorted(os.listdir(work)) == [MANIFEST, recs[0].file]
    assert on_disk(work)["segments"] == [json.loads(json.dumps(recs[0].__dict__))]


def test_layout_alone_is_resumed(tmp_path):
    work = tmp_path / "w"
    m = Manifest.open(work=work, identity=ID)
    m.layout = {"sar": [1, 1]}
    m.save()
    again = Manifest.open(work=work, identity=ID)
    assert again.layout == {"sar": [1, 1]} and again.note.startswith("resuming: 0 frames in 0 segments")


def test_other_settings_start_over_and_say_what_changed(tmp_path):
    work = tmp_path / "w"
    m = Manifest.open(work=work, identity=ID)
    m.add(segment(work, 0))
    (work / "part_00004").mkdir()  # a part computed elsewhere stays until its turn (or the folder goes)
    again = Manifest.open(work=work, identity={**ID, "scale": 4, "window": [3, 5]})
    assert again.segments == [] and again.layout is None
    assert again.note == f"earlier unfinished work in {work.name} does not match (scale, window changed): starting over"
    assert sorted(os.listdir(work)) == [MANIFEST, "part_00004"]
    assert on_disk(work)["identity"]["scale"] == 4


@pytest.mark.parametrize("content, what", [("{cut", "unreadable manifest"), (None, "unreadable manifest"),
                                           ("old version", "scale")])
def test_unreadable_missing_or_old_manifest_starts_over(tmp_path, content, what):
    work = tmp_path / "w"
    work.mkdir()
    (work / "seg_00000.mkv").write_bytes(b"x" * 100)
    if content == "old version":
        old = {"version": resume.VERSION + 1, "identity": {**ID, "scale": 3}, "segments": []}
        (work / MANIFEST).write_text(json.dumps(old))
    elif content:
        (work / MANIFEST).write_text(content)
    m = Manifest.open(work=work, identity=ID)
    assert m.note == f"earlier unfinished work in {work.name} does not match ({what} changed): starting over"
    assert m.segments == [] and sorted(os.listdir(work)) == [MANIFEST]


def test_a_folder_of_parts_only_is_no_earlier_work(tmp_path):
    work = tmp_path / "w"
    (work / "part_00003").mkdir(parents=True)
    (work / ".part_00003.vsr-lock").write_text("1")
    m = Manifest.open(work=work, identity=ID)
    assert m.note is None and sorted(os.listdir(work)) == [".part_00003.vsr-lock", MANIFEST, "part_00003"]


def test_an_interrupted_manifest_write_leaves_the_last_one(tmp_path):
    work = tmp_path / "w"
    m = Manifest.open(work=work, identity=ID)
    m.add(segment(work, 0))
    before = (work / MANIFEST).read_text()
    m.layout = {"not json": object()}
    with pytest.raises(TypeError):
        m.save()
    assert (work / MANIFEST).read_text() == before
    m.layout = None
    assert Manifest.open(work=work, identity=ID).segments == m.segments


def test_recorded_identity(tmp_path):
    work = tmp_path / "w"
    assert resume.recorded_identity(work) is None
    Manifest.open(work=work, identity=ID)
    assert resume.recorded_identity(work) == json.loads(json.dumps(ID))
    for text in ("[1, 2]", "{cut"):
        (work / MANIFEST).write_text(text)
        assert resume.recorded_identity(work) is None


def make_part(work, number: int, identity=ID, *, finished: bool = True, segments: int = 1, frames: int = 10):
    """A part as a worker leaves it: its own manifest in work/part_N, one segment, end set when done."""
    folder = work / f"part_{number:05d}"
    p = Manifest.open(work=folder, identity=identity)
    p.layout = {"part": number}
    for i in range(segments):
        p.add(segment(folder, number * 10 + i, frames=frames))
    if finished:
        p.end = {"frames": p.frames}
        p.save()
    return p.segments


def test_finished_parts_are_adopted_in_order(tmp_path):
    work = tmp_path / "w"
    m = Manifest.open(work=work, identity=ID)
    m.add(segment(work, 0, frames=7))
    first = make_part(work, 1, frames=5)
    second = make_part(work, 2, frames=6)
    make_part(work, 4)  # not next: waits
    again = Manifest.open(work=work, identity=ID)
    assert [r.file for r in again.segments] == ["seg_00000.mkv", first[0].file, second[0].file]
    assert again.adopted == 11 and again.frames == 18 and again.layout == {"part": 1}
    assert again.note == (f"11 frames came from parts computed separately; 18 frames in 3 segments are done "
                          f"({work.name})")
    assert sorted(os.listdir(work)) == [MANIFEST, "part_00004", "seg_00000.mkv", first[0].file, second[0].file]
    assert (work / second[0].file).read_bytes() == bytes([20]) * 100
    assert Manifest.open(work=work, identity=ID).segments == again.segments  # saved


def test_a_resumed_layout_is_not_replaced_by_a_parts(tmp_path):
    work = tmp_path / "w"
    m = Manifest.open(work=work, identity=ID)
    m.layout = {"own": True}
    m.save()
    make_part(work, 0)
    assert Manifest.open(work=work, identity=ID).layout == {"own": True}


@pytest.mark.parametrize("kind", ["other identity", "unfinished", "two segments", "file gone", "no manifest"])
def test_parts_that_cannot_continue_are_not_adopted(tmp_path, kind):
    work = tmp_path / "w"
    if kind == "other identity":
        make_part(work, 0, identity={**ID, "scale": 3})
    elif kind == "unfinished":
        make_part(work, 0, finished=False)
    elif kind == "two segments":
        make_part(work, 0, segments=2)
    elif kind == "file gone":
        (work / "part_00000" / make_part(work, 0)[0].file).unlink()
    else:
        (work / "part_00000").mkdir(parents=True)
    make_part(work, 1)  # fine, but its turn comes only after part 0
    m = Manifest.open(work=work, identity=ID)
    assert m.segments == [] and m.adopted == 0 and m.note is None
    assert sorted(p.name for p in work.iterdir()) == [MANIFEST, "part_00000", "part_00001"]


def test_input_identity_sees_size_time_and_the_first_megabyte(tmp_path):
    path = tmp_path / "in.bin"
    data = bytearray(os.urandom(resume.HEAD_BYTES + 4096))
    path.write_bytes(data)
    ident = resume.input_identity(path)
    assert ident == {"path": str(path.resolve()), "size": len(data), "mtime_ns": path.stat().st_mtime_ns,
                     "head_sha256": hashlib.sha256(bytes(data[:resume.HEAD_BYTES])).hexdigest()}
    data[-1] ^= 1  # after the first megabyte: same hash
    path.write_bytes(data)
    assert resume.input_identity(path)["head_sha256"] == ident["head_sha256"]
    data[resume.HEAD_BYTES - 1] ^= 1
    path.write_bytes(data)
    assert resume.input_identity(path)["head_sha256"] != ident["head_sha256"]


@pytest.mark.parametrize("exc, full", [
    (OSError(errno.ENOSPC, "x"), True), (OSError(errno.EDQUOT, "x"), True), (OSError(errno.EACCES, "x"), False),
    (RuntimeError("ffmpeg: av_interleaved_write_frame(): No space left on device"), True),
    (RuntimeError("write error: Disk quota exceeded"), True), (RuntimeError("Invalid data"), False),
    (subprocess.CalledProcessError(1, ["ffmpeg"]), False),
])
def test_disk_full_is_recognised(exc, full):
    assert resume.is_disk_full(exc) is full


def test_commit_makes_the_file_visible_whole(tmp_path):
    partial, final = tmp_path / "seg.mkv.partial", tmp_path / "seg.mkv"
    partial.write_bytes(b"abc")
    final.write_bytes(b"old")
    resume.commit_file(partial, final)
    assert final.read_bytes() == b"abc" and not partial.exists()
    with pytest.raises(FileNotFoundError):
        resume.fsync_file(tmp_path / "none")
    resume.fsync_dir(tmp_path / "none")  # nothing to make durable: no error
    resume.fsync_dir(tmp_path)


def test_parts_are_recognised_by_name():
    assert [resume._is_part(type("P", (), {"name": n})) for n in
            ("part_00001", ".part_00001.vsr-lock", "seg_part_1.mkv", "manifest.json")] == [True, True, False, False]


def test_a_second_run_on_the_same_output_is_refused(tmp_path):
    out = tmp_path / "film.mkv"
    lock = resume.lock_path_for(out)
    lock.write_text("12345")  # left by a killed run: not held, so it does not block
    with resume.output_lock(out):
        assert lock.read_text() == str(os.getpid())
        with pytest.raises(VsrError) as e:
            with resume.output_lock(out):
                pass
        assert str(e.value) == (f"another vsr run (process {os.getpid()}) is writing {out}; wait for it to "
                                "finish, or choose another -o")
        assert e.value.__cause__ is None and e.value.__suppress_context__
    assert not lock.exists()
    with resume.output_lock(out):  # free again
        pass


def test_a_holder_without_a_process_number_is_still_named_plainly(tmp_path):
    out = tmp_path / "film.mkv"
    import fcntl
    fd = os.open(resume.lock_path_for(out), os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(VsrError) as e:
            with resume.output_lock(out):
                pass
        assert str(e.value).startswith(f"another vsr run is writing {out}; ")
    finally:
        os.close(fd)


def test_adoption_stops_at_the_first_part_that_cannot_continue(tmp_path):
    work = tmp_path / "w"
    first = make_part(work, 0, frames=4)
    make_part(work, 1, finished=False)
    m = Manifest.open(work=work, identity=ID)
    assert m.segments == first and m.adopted == 4
    assert m.note == f"4 frames came from parts computed separately; 4 frames in 1 segments are done ({work.name})"


def test_manifests_without_segments_hold_none(tmp_path):
    """A manifest or a part's manifest that lists no segments (written before any was finished)."""
    work = tmp_path / "w"
    work.mkdir()
    (work / MANIFEST).write_text(json.dumps({"version": resume.VERSION, "identity": ID, "layout": {"a": 1},
                                             "end": None}))
    (work / "part_00000").mkdir()
    (work / "part_00000" / MANIFEST).write_text(json.dumps({"version": resume.VERSION, "identity": ID,
                                                            "end": {"frames": 0}}))
    m = Manifest.open(work=work, identity=ID)
    assert m.segments == [] and m.layout == {"a": 1} and m.adopted == 0
