"""The ``finetune`` and ``train`` commands; ``vsr.cli`` adds them with :func:`register`.

    vsr finetune --frames DIR --model esrgan [--recipe finetune-ARCH] [--steps N] [--name NAME]
    vsr train RECIPE.yml [--resume] [--set KEY=VALUE ...]
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Callable

from ..errors import VsrError


def _positive_int(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {value!r}")
    return int(value)


def _setting(value: str) -> tuple[str, object]:
    import yaml

    key, sep, text = value.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*", key):
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE with a dotted recipe key, got {value!r}")
    try:
        return key, yaml.safe_load(text)
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(f"{key}: the value {text!r} is not YAML") from None


def register(subparsers: argparse._SubParsersAction) -> dict[str, Callable[[argparse.Namespace], int]]:
    ft = subparsers.add_parser("finetune", help="adapt a model to your own footage (frames, photos or a video)")
    ft.add_argument("--frames", type=Path, required=True, help="folder of frames/photos, or a video file")
    ft.add_argument("--model", default="esrgan", help="model to start from (name or weights file)")
    ft.add_argument("--recipe", help="training recipe: a name in pipelines/ or a .yml (default: the one for "
                    "the model's architecture, finetune-ARCH: finetune-esrgan for rrdb, finetune-compact)")
    ft.add_argument("--steps", type=_positive_int, help="training steps (default: the recipe's)")
    ft.add_argument("--name", help="name of the new model (default: MODEL-FOLDER)")
    ft.add_argument("--output", type=Path, help="run folder for checkpoints and logs (default runs/NAME)")
    ft.add_argument("--resume", action="store_true", help="continue an interrupted run of the same name")
    ft.add_argument("--quiet", action="store_true", help="no progress bar")

    tr = subparsers.add_parser("train", help="train from a recipe (YAML); torchrun runs it on several GPUs")
    tr.add_argument("recipe", help="recipe file (.yml) or a name in pipelines/")
    tr.add_argument("--resume", action="store_true", help="continue from the run folder's latest checkpoint")
    tr.add_argument("--frames", type=Path, help="override the recipe's data.frames")
    tr.add_argument("--steps", type=_positive_int, help="override the recipe's total_steps")
    tr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", type=_setting,
                    help="override any recipe key, dotted, value in YAML (repeatable), e.g. --set seed=27 "
                         "--set networks.generator.weights=runs/a/a.safetensors")
    tr.add_argument("--name", help="also write the final model (and its card) under this name into the "
                    "user's models folder")
    tr.add_argument("--quiet", action="store_true", help="no progress bar")
    return {"finetune": cmd_finetune, "train": cmd_train}


def _model_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise VsrError(f"model name {name!r}: use letters, digits, '.', '_' and '-'")
    return name


# the fine-tuning recipe of each architecture, where its name is not finetune-ARCH
FINETUNE_RECIPES = {"rrdb": "finetune-esrgan"}


def finetune_recipe(model: str) -> tuple[Path, int]:
    """(the fine-tuning recipe for the model's architecture, the model's scale), from its card for a
    name, from the weights for a file."""
    from .. import weights, zoo
    from .config import find_recipe

    path = Path(model).expanduser()
    card = None
    if not (path.suffix.lower() in (*weights.WEIGHT_SUFFIXES, ".param") or path.is_file()):
        card = zoo.cards().get(model)
    if card is not None:
        architecture, scale = card.architecture, card.scale
    else:
        desc, _ = zoo.resolve(model)  # an unknown name fails here, naming the known ones
        architecture, scale = desc.arch, desc.scale
    if scale != int(scale):
        raise VsrError(f"{model} is x{scale:g}; training needs a whole-number scale")
    recipe = FINETUNE_RECIPES.get(architecture, f"finetune-{architecture}")
    try:
        return find_recipe(recipe), int(scale)
    except VsrError:
        raise VsrError(f"no fine-tuning recipe for {model}'s architecture {architecture} (pipelines/{recipe}.yml); "
                       "give one with --recipe") from None


def cmd_finetune(args: argparse.Namespace) -> int:
    from .config import load_recipe

    name = _model_name(args.name or f"{Path(args.model).stem}-{args.frames.resolve().stem}")
    recipe, scale = finetune_recipe(args.model)
    overrides: dict = {"data.frames": str(args.frames), "networks.generator.weights": args.model,
                       "name": name, "scale": scale}  # the data are made at the starting model's scale
    if args.steps:
        overrides["total_steps"] = args.steps
    if args.output:
        overrides["output"] = str(args.output)
    cfg = load_recipe(args.recipe or recipe, **overrides)  # a bad recipe fails here, before training
    from .. import zoo
    from .loop import train

    result = train(cfg, resume=args.resume, progress=not args.quiet, export_name=name,
                   export_dir=zoo.user_models_dir())
    _summary(result, name)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .config import load_recipe

    overrides: dict = dict(args.set)
    if args.frames:
        overrides["data.frames"] = str(args.frames)
    if args.steps:
        overrides["total_steps"] = args.steps
    cfg = load_recipe(args.recipe, **overrides)  # a bad recipe fails here, before torch is imported
    name = _model_name(args.name) if args.name else None
    from .. import zoo
    from .loop import train

    result = train(cfg, resume=args.resume, progress=not args.quiet, export_name=name or cfg.name,
                   export_dir=zoo.user_models_dir() if name else None)
    _summary(result, name)
    return 0


def _summary(result, name: str | None) -> None:
    m = result.metrics
    quality = f", validation PSNR-Y {m['psnr_y']:.2f} dB SSIM-Y {m['ssim_y']:.4f}" if m else ""
    if "tof" in m:  # clips
        quality += f" tOF {m['tof']:.3f} warping error {m['warping_error']:.3g}"
    print(f"trained {result.step} steps in {result.seconds / 60:.1f} min{quality}; run folder {result.output}")
    if result.card is not None and name:
        print(f"model {name}: {result.card} (use it with: vsr upscale INPUT --model {name})")


def main(argv: list[str] | None = None) -> int:
    """Standalone entry (``python -m vsr.train.cli``), also what torchrun starts."""
    parser = argparse.ArgumentParser(prog="vsr")
    sub = parser.add_subparsers(dest="command", required=True)
    commands = register(sub)
    args = parser.parse_args(argv)
    try:
        return commands[args.command](args)
    except VsrError as e:
        print(f"vsr: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
