"""pipelines/: the presets and recipes users pick, told apart by the kind each file declares; the recipes
that made a shipped model stay there; experiments that shipped nothing are kept apart and not installed."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from vsr import catalog
from vsr.errors import VsrError
from vsr.train.config import find_recipe, load_recipe
from vsr.upscale import load_preset
from vsr.yamlfile import read_mapping

ROOT = Path(__file__).resolve().parents[1]


def test_every_shipped_file_is_a_recipe_or_a_preset():
    recipes, presets = catalog.names("recipe"), catalog.names("preset")
    assert presets == ["dvd", "vhs"]
    assert {p.stem for p in (ROOT / "pipelines").glob("*.yml")} == {*recipes, *presets}
    for name in recipes:
        assert read_mapping(find_recipe(name), "recipe")["kind"] == "recipe"
        assert load_recipe(name).steps
    for name in presets:  # the presets' own loader takes them (and no recipe is among them)
        assert "ingest" in load_preset(name) and name not in recipes
    experiments = sorted((ROOT / "pipelines" / "experiments").glob("*.yml"), key=lambda p: p.stem)
    assert [p.stem for p in experiments] == ["capture-esrgan", "capture-esrgan-2", "capture-esrgan-4",
                                             "digital-esrgan", "esrgan-gan"]
    for path in experiments:
        assert read_mapping(path, "recipe")["kind"] == "recipe" and load_recipe(path).steps
    assert [p.name for p in (ROOT / "pipelines").glob("*.py")] == ["__init__.py"]  # no scripts installed


def test_the_recipes_of_shipped_models_are_shipped():
    named = {m for card in (ROOT / "models").glob("*.yml")
             for m in re.findall(r"pipelines/([\w.-]+)\.yml", card.read_text())}
    assert named and named <= set(catalog.names("recipe")), named - set(catalog.names("recipe"))


def test_a_preset_is_not_a_recipe(tmp_path):
    with pytest.raises(VsrError, match="unknown recipe 'vhs'; shipped: capture-compact, "):
        find_recipe("vhs")
    preset = tmp_path / "mine.yml"
    preset.write_text("kind: preset\ningest: {deinterlace: auto}\n")
    with pytest.raises(VsrError, match="mine.yml is a restoration preset .kind: preset., not a training recipe"):
        load_recipe(preset)
    preset.write_text("kind: recpie\nname: x\n")
    with pytest.raises(VsrError, match="mine.yml: kind: expected preset or recipe, got 'recpie'"):
        load_recipe(preset)


def test_kind_is_a_marker_not_a_setting(tmp_path):
    """A recipe's kind does not reach the config (nor the checkpoints that store it); without one, a
    user's own file is a recipe."""
    text = (Path(__file__).with_name("train_tiny.yml")).read_text()
    (tmp_path / "a.yml").write_text(text)
    (tmp_path / "b.yml").write_text("kind: recipe\n" + text)
    assert load_recipe(tmp_path / "a.yml") == load_recipe(tmp_path / "b.yml")
