"""Command-line interface: argument parsing only; each command calls one function."""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Callable

from . import __version__
from .errors import VsrError

Subparsers = argparse._SubParsersAction  # what add_subparsers returns


def _devices(value: str) -> list[str]:
    """0,1 -> cuda:0, cuda:1; names (cpu, cuda:2, mps) as they are."""
    names = [f"cuda:{d}" if d.strip().isdigit() else d.strip() for d in value.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected a list such as 0,1 or cuda:0,cuda:1, got {value!r}")
    return names


def _tile(value: str) -> str | int:
    if value == "auto":
        return value
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto or a number of pixels, got {value!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected auto, 0 (no tiling) or a positive size, got {n}")
    return n


def _positive_float(value: str) -> float:
    try:
        f = float(value)
    except ValueError:
        f = -1.0
    if not 0 < f <= 16:
        raise argparse.ArgumentTypeError(f"expected a scale between 0 and 16, got {value!r}")
    return f


def _positive_int(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {value!r}")
    return int(value)


def _delay(value: str) -> tuple[float, float]:
    try:
        parts = [float(v) for v in value.split(",")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2):
        raise argparse.ArgumentTypeError(f"expected DX,DY in pixels (e.g. 2.5,0), got {value!r}")
    return parts[0], parts[1] if len(parts) == 2 else 0.0


def _key_values(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise VsrError(f"encoder option {item!r} is not KEY=VALUE")
        out[key] = value
    return out


def _video_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of a video job: encoding, analog sources (ingest filters, tape repair), crash safety."""
    v = parser.add_argument_group("video encoding")
    v.add_argument("--codec", help="libx264 (default), libx265, libsvtav1, ffv1 (lossless), "
                   "prores_ks")
    v.add_argument("--crf", type=float, help="constant quality, lower is better (default per codec: x264 16, "
                   "x265 18, svtav1 20)")
    v.add_argument("--encoder-preset", help="encoder speed preset (default slow; x264 veryfast while the network "
                   "runs on the CPU; svtav1 6)")
    v.add_argument("--pix-fmt", help="output pixel format (default yuv420p, yuv420p10le for >8-bit input; "
                   "4:4:4 and 4:2:2 input keep their chroma)")
    v.add_argument("-x", "--encoder-option", action="append", default=[], metavar="KEY=VALUE",
                   help="passed to the encoder as is, e.g. -x tune=grain (repeatable)")
    v.add_argument("--keep-sar", action="store_true",
                   help="keep non-square pixels (default: square pixels at the right display size)")
    v.add_argument("--max-frames", type=_positive_int, help="only the first N frames (a preview)")
    a = parser.add_argument_group("analog sources")
    a.add_argument("--deinterlace", choices=["auto", "off", "bwdif", "yadif"],
                   help="auto (default): deinterlace with bwdif when idet finds interlacing")
    a.add_argument("--double-rate", action=argparse.BooleanOptionalAction, default=None,
                   help="one frame per field: 50/60 frames per second from interlaced 25/30")
    a.add_argument("--crop", help="auto (black borders, VHS head-switching band), off, or W:H:X:Y")
    a.add_argument("--colour", choices=["auto", "bt709", "keep"],
                   help="auto (default): BT.601 input becomes BT.709 when the output is HD; keep: stay BT.601")
    a.add_argument("--repair", metavar="auto|off|LIST",
                   help="tape repair before the network: auto (each repair measures and applies what it finds; "
                   "the vhs preset's), off (default), or a comma list of chroma-delay, dropouts, head-switching, "
                   "chroma-noise, jitter")
    a.add_argument("--chroma-delay", type=_delay, metavar="DX,DY",
                   help="undo this chroma delay (px right, down) instead of measuring it")
    a.add_argument("--drop-repeats", action="store_true", default=None,
                   help="leave out the frames the capture repeated (with tape repair on; timestamps kept, so the "
                   "frame before shows longer and audio stays in sync)")
    r = parser.add_argument_group("crash safety")
    r.add_argument("--no-resume", action="store_true",
                   help="no work folder: an interrupted video starts again from its first frame")
    r.add_argument("--segment-frames", type=_positive_int,
                   help="frames per resumable segment (default 250): the most work a crash can cost")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vsr", description="Restore and upscale old video and images.")
    p.add_argument("--version", action="version", version=f"vsr {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks and library warnings")
    sub = p.add_subparsers(dest="command", required=True)
    for add, handler in _commands():  # in the order `vsr --help` lists them
        add(sub).set_defaults(handler=handler)
    from .train.cli import register as register_training
    for name, handler in register_training(sub).items():
        sub.choices[name].set_defaults(handler=handler)
    return p


def _add_upscale(sub: Subparsers) -> argparse.ArgumentParser:
    up = sub.add_parser("upscale", help="upscale an image, a video or a folder of them")
    up.add_argument("input", type=Path, help="image, video or folder")
    up.add_argument("-o", "--output", type=Path, help="output file or folder (default: beside the input)")
    up.add_argument("--model", help="model name (see `vsr models`) or weights file (default esrgan)")
    up.add_argument("--preset", help="restoration preset: vhs, dvd (pipelines/NAME.yml) or a .yml file; "
                    "options given here override it")
    up.add_argument("--scale", type=_positive_float, help="output scale if not the model's own")
    up.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, cuda:N, mps")
    up.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16", "int8"])
    up.add_argument("--devices", type=_devices, metavar="LIST",
                    help="several devices, e.g. 0,1 (cuda:0, cuda:1): one engine each, the files spread across "
                    "them (one video: its batches)")
    up.add_argument("--cluster", metavar="ADDRESS", help="run each file as a task on a Ray cluster: auto (the "
                    "running one), HOST:PORT or ray://HOST:PORT (pip install 'vsr[cluster]')")
    up.add_argument("--backend", default="auto", choices=["auto", "torch", "openvino", "ncnn"],
                    help="auto: on the CPU the fastest faithful one measured on this machine (with --precision "
                    "auto); ncnn runs Real-ESRGAN's released models from their own files")
    up.add_argument("--tile", type=_tile, default="auto", help="auto, 0 (off) or input tile size in pixels")
    up.add_argument("--tau", "--temperature", dest="temperature", type=float,
                    help="sampled models (srflow): latent temperature, default 0 (the mean image, most faithful)")
    up.add_argument("--seed", type=int, help="sampled models: seed of the latents at --tau above 0 (default 0)")
    up.add_argument("--ensemble", type=int, choices=[4, 8],
                    help="self-ensemble: average 4 flipped (8: also transposed) passes; 4x / 8x the time")
    up.add_argument("--batch", type=_positive_int, help="video frames per network call (default 1 on CPU, 4 on GPU)")
    _video_arguments(up)
    up.add_argument("--overwrite", action="store_true", help="redo outputs that already exist")
    up.add_argument("--quiet", action="store_true", help="no progress bars")
    up.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    return up


def _add_repair(sub: Subparsers) -> argparse.ArgumentParser:
    rp = sub.add_parser("repair", help="tape repair alone, no network: chroma delay, dropouts, head-switching, "
                        "chroma noise, line jitter (for upscaling elsewhere)")
    rp.add_argument("input", type=Path, help="video, or a folder of videos (mirrored into the output folder)")
    rp.add_argument("-o", "--output", type=Path, help="output file or folder (default: INPUT_repaired beside the input)")
    rp.add_argument("--preset", help="restoration preset whose ingest settings to use (vhs, dvd or a .yml file)")
    _video_arguments(rp)
    rp.add_argument("--overwrite", action="store_true", help="redo an output that already exists")
    rp.add_argument("--quiet", action="store_true", help="no progress bar")
    rp.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    return rp


def _add_models(sub: Subparsers) -> argparse.ArgumentParser:
    return sub.add_parser("models", help="list the named models")


def _add_average(sub: Subparsers) -> argparse.ArgumentParser:
    av = sub.add_parser("average", help="average the weights of fine-tunes of one network (a model soup): "
                        "the average often keeps what each of them is good at")
    av.add_argument("models", nargs="+", metavar="MODEL", help="model names or weights files, all one network")
    av.add_argument("--weights", type=float, nargs="+", metavar="W",
                    help="one weight per model (default equal), scaled to sum to 1")
    av.add_argument("-o", "--output", type=Path, required=True, help="weights file to write (.safetensors)")
    return av


def _add_demo(sub: Subparsers) -> argparse.ArgumentParser:
    demo = sub.add_parser("demo", help="restore a generated, degraded video clip")
    demo.add_argument("-o", "--output", type=Path, default=Path("vsr-demo"), help="folder (default vsr-demo)")
    demo.add_argument("--model", default="esrgan")
    demo.add_argument("--device", default="auto")
    return demo


def _add_srflow(sub: Subparsers) -> argparse.ArgumentParser:
    fl = sub.add_parser("srflow", help="a flow model's other uses: restore an image, transfer texture")
    fl_sub = fl.add_subparsers(dest="action", required=True)
    rs = fl_sub.add_parser("restore", help="normalise the image's latents (zero mean, unit std) and decode")
    rs.add_argument("image", type=Path)
    tf = fl_sub.add_parser("transfer", help="decode image A's latents with image B's low resolution")
    tf.add_argument("a", type=Path, help="the image whose latents (fine texture) are taken")
    tf.add_argument("b", type=Path, help="the image whose content (its downscale) they are decoded with")
    for q in (rs, tf):
        q.add_argument("-o", "--output", type=Path, required=True, help="output image")
        q.add_argument("--model", default="srflow", help="an SRFlow model: name or weights file (default srflow)")
        q.add_argument("--device", default="auto")
    return fl


def _add_inspect(sub: Subparsers) -> argparse.ArgumentParser:
    ins = sub.add_parser("inspect", help="look inside a model")
    ins_sub = ins.add_subparsers(dest="what", required=True)
    sel = ins_sub.add_parser("selectors", help="each switched layer's choice of kernel, as colour maps")
    sel.add_argument("image", type=Path)
    sel.add_argument("-o", "--output", type=Path, required=True, help="output image (the maps beside the input)")
    sel.add_argument("--model", default="switched", help="a switched model: name or weights file")
    return ins


def _add_bench(sub: Subparsers) -> argparse.ArgumentParser:
    be = sub.add_parser("bench", help="how fast a model runs here: model-only and end-to-end frames/s, "
                        "GFLOP/s against the machine's peak")
    be.add_argument("--model", default="esrgan", help="model name or weights file (default esrgan)")
    be.add_argument("--size", help="input frame size WxH (default 320x240; with --clip, the clip's)")
    be.add_argument("--precision", default="auto", help="auto, fp32, bf16, fp16 or int8")
    be.add_argument("--backend", default="auto", choices=["auto", "torch", "openvino", "ncnn"],
                    help="as vsr upscale's")
    be.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, cuda:N, mps")
    be.add_argument("--frames", type=_positive_int, default=6, help="frames of the pipeline run (default 6)")
    be.add_argument("--runs", type=_positive_int, default=3, help="timed runs of each measurement (default 3)")
    be.add_argument("--batch", type=_positive_int, help="frames per network call (default 1 on CPU, 4 on GPU)")
    be.add_argument("--codec", help="output codec of the pipeline run (default libx264, as vsr upscale)")
    be.add_argument("--clip", type=Path, help="run the pipeline on this video instead of a generated clip")
    be.add_argument("--backends", action="store_true", help="time every backend and precision this CPU can "
                    "run the model in, against PyTorch fp32, and keep the fastest faithful one for vsr upscale")
    be.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    return be


def _add_compare(sub: Subparsers) -> argparse.ArgumentParser:
    from .compare import add_arguments

    cp = sub.add_parser(
        "compare", help="two restorations of one clip: PSNR-Y/SSIM-Y, tOF, warping error, a picture and a plot")
    add_arguments(cp)
    return cp


def _add_serve(sub: Subparsers) -> argparse.ArgumentParser:
    sv = sub.add_parser("serve", help="a page in the browser: pick files, choose a preset and model, follow the "
                        "queue (pip install 'vsr[serve]')")
    sv.add_argument("--root", type=Path, help="the folder the page may open and write in (default: your home)")
    sv.add_argument("--port", type=_positive_int, default=8770, help="default 8770")
    sv.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (this machine only); any other "
                    "address lets other machines in with the token it prints")
    sv.add_argument("--state", type=Path, help="where the queue is kept (default ~/.cache/vsr/serve)")
    return sv


def _job_options(args: argparse.Namespace, **defaults: object):
    """The options of an upscale or repair job from its arguments (what a command does not have is None)."""
    from .upscale import options_with_preset

    given = {k: getattr(args, k, None) for k in (
        "model", "scale", "temperature", "seed", "ensemble", "device", "precision", "backend", "cluster", "devices",
        "tile", "overwrite", "batch", "segment_frames", "codec", "crf", "encoder_preset", "pix_fmt", "keep_sar",
        "max_frames", "deinterlace", "double_rate", "crop", "colour", "repair", "chroma_delay", "drop_repeats")}
    given.update({k: v for k, v in defaults.items() if given[k] is None})
    return options_with_preset(args.preset, encoder_options=_key_values(args.encoder_option),
                               quiet=args.quiet or args.json, resume=not args.no_resume, **given)


def cmd_upscale(args: argparse.Namespace) -> int:
    from .upscale import upscale

    return _finish(args, upscale(args.input, args.output, _job_options(args)))


def cmd_repair(args: argparse.Namespace) -> int:
    from .upscale import repair_only

    return _finish(args, repair_only(args.input, args.output, _job_options(args, repair="auto", device="cpu")))


def _finish(args: argparse.Namespace, report) -> int:
    """The job's report on stdout (--json) or stderr; the exit code."""
    if args.json:
        print(json.dumps(report.as_dict()))
    else:
        for note in report.notes:
            print(f"vsr: {note}", file=sys.stderr)
        if len(report.rows) > 1:
            print(report.table(), file=sys.stderr)
        elif report.skipped:
            print(f"vsr: {report.skipped[0]} exists; --overwrite redoes it", file=sys.stderr)
    return 1 if report.failed else 0


def cmd_models(args: argparse.Namespace) -> int:
    from . import zoo

    rows = [("name", "arch", "scale", "params", "weights", "licence", "source")]
    for name, card in sorted(zoo.cards().items()):
        n = zoo.parameter_count(card)
        present = "present" if zoo.weights_present(card) else ("converted on first use" if card.ncnn else "missing")
        rows.append((name, card.architecture, f"x{card.scale:g}", f"{n / 1e6:.2f}M" if n else "?", present,
                     card.license, card.source))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
    return 0


def cmd_average(args: argparse.Namespace) -> int:
    from . import zoo

    zoo.average(args.models, args.weights, args.output)
    print(f"wrote {args.output} (use it with: vsr upscale INPUT --model {args.output})")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args.output, model=args.model, device=args.device)


def cmd_srflow(args: argparse.Namespace) -> int:
    from .flowtools import run

    return run(args)


def cmd_compare(args: argparse.Namespace) -> int:
    from .compare import run

    return run(args)


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import run

    return run(args)


def cmd_serve(args: argparse.Namespace) -> int:
    from .serve import serve

    return serve(args.root, host=args.host, port=args.port, state=args.state)


def cmd_inspect(args: argparse.Namespace) -> int:
    from .inspect import run

    return run(args)


def _commands() -> list[tuple[Callable[[Subparsers], argparse.ArgumentParser], Callable[[argparse.Namespace], int]]]:
    """Each command: the function that adds its parser, the one that runs it (looked up when the parser is
    built); the training commands come from vsr.train.cli."""
    return [(_add_upscale, cmd_upscale), (_add_repair, cmd_repair), (_add_models, cmd_models),
            (_add_average, cmd_average), (_add_demo, cmd_demo), (_add_srflow, cmd_srflow),
            (_add_inspect, cmd_inspect), (_add_bench, cmd_bench), (_add_compare, cmd_compare),
            (_add_serve, cmd_serve)]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            if not args.debug:  # library warnings are for developers: a refusal or a run says one line
                warnings.simplefilter("ignore")
            return args.handler(args)
    except KeyboardInterrupt as e:  # a resumable video says where its finished work is kept
        print(f"vsr: interrupted; {e}" if str(e) else "vsr: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # one line for the user; the traceback with --debug
        if args.debug:
            raise
        kind = "" if isinstance(e, (VsrError, OSError)) else f"internal error ({type(e).__name__}): "
        msg = " ".join(str(e).split()) or type(e).__name__
        print(f"vsr: error: {kind}{msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
