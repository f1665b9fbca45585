"""One job over several files or devices: outputs never collide with each other or with an input, devices
share a video only when they compute alike, and a skipped output's leftovers respect a running job."""
import json
import sys
from pathlib import Path

import av

from vsr.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parent))
import media  # noqa: E402


def test_one_video_is_spread_only_over_devices_that_compute_alike(tmp_path, tiny_weights, capsys, monkeypatch):
    """The second device's engine tiles where the first does not: its batches would differ, so the video
    stays on the first and comes out as on one device."""
    import vsr.upscale
    from vsr.engine.upscaler import Session, Upscaler

    made = []

    def engine(desc, **kw):
        made.append(Upscaler(desc, **{**kw, "tile": 16} if made else kw))
        return made[-1]

    monkeypatch.setattr(vsr.upscale, "Upscaler", engine)
    used = set()
    true_call = Session.upscale_array
    monkeypatch.setattr(Session, "upscale_array", lambda self, arr, **kw: used.add(id(self.engine)) or
                        true_call(self, arr, **kw))
    src = media.make_mp4(tmp_path / "tape.mp4", width=40, height=24, frames=8, audio=False)
    frames = {}
    for name, extra in (("one", []), ("two", ["--devices", "cpu,cpu"])):
        made.clear()
        used.clear()
        out = tmp_path / f"{name}.mkv"
        assert main(["upscale", str(src), "-o", str(out), "--model", str(tiny_weights), "--codec", "ffv1",
                     "--batch", "1", "--quiet", "--json", *extra]) == 0
        report = json.loads(capsys.readouterr().out)
        assert used == {id(made[0])}
        with av.open(str(out)) as c:
            frames[name] = [f.to_ndarray().tobytes() for f in c.decode(video=0)]
    assert frames["one"] == frames["two"] and len(frames["one"]) == 8
    assert any("not spread over cpu" in n for n in report["notes"]), report["notes"]
