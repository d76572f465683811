"""The ``tsam`` command line: on the built-in tiny-sd (Stable Diffusion) with 4 steps, and on the
default model, the bundled tsam-mini, with its own defaults."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from PIL import Image

import tsam_diffusion
from tsam_diffusion.cli import main, output_stem, slugify

PROMPT = "a black car and a white clock"
SLUG = "a-black-car-and-a-white-clock"


def one(folder, pattern):
    """The single file in ``folder`` matching ``pattern`` (names carry a hash of the prompt and settings)."""
    found = sorted(folder.glob(pattern))
    assert len(found) == 1, (pattern, found)
    return found[0]


def gen(tmp_path, *extra):
    return main(["generate", PROMPT, "--model", "tiny-sd", "--steps", "4", "--out", str(tmp_path), *extra])


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"tsam-diffusion {tsam_diffusion.__version__}"


def test_generate_help_names_the_models(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "60")  # narrow: hyphenated names must still not be split
    assert main(["generate", "--help"]) == 0
    out = capsys.readouterr().out
    assert "(default: tsam-mini)" in " ".join(out.split())
    assert "tiny-sd" in out and "stable-diffusion-v1-5/stable-diffusion-v1-5" in out


def test_no_subcommand_is_a_usage_error(capsys):
    assert main([]) == 2
    assert capsys.readouterr().err == ("error: tsam: the following arguments are required: COMMAND; "
                                       "see `tsam --help`\n")


def test_slugify():
    assert slugify("A Black car, and a WHITE clock!") == "a-black-car-and-a-white-clock"
    assert len(slugify("word " * 50)) <= 60 and not slugify("word " * 50).endswith("-")
    assert slugify("a red apple on a table with a small blue bird and a green cup") == "a-red-apple-on-a-table-with-a-small-blue-bird-and-a-green"
    assert slugify("x" * 100) == "x" * 60
    assert slugify("猫") == "prompt"


def test_output_names_never_collide():
    """Prompts that slug alike, or one prompt with other settings, get other names; the same request the same."""
    plain, fancy = "a red circle and a blue square", "a 🔴 red circle and a blue 方形 square ✨"
    assert output_stem(plain, {"alpha": 1}).startswith("a-red-circle-and-a-blue-square-")
    assert output_stem(plain, {"alpha": 1}) == output_stem(plain, {"alpha": 1})
    assert len({output_stem(plain, {"alpha": 1}), output_stem(fancy, {"alpha": 1}), output_stem(plain, {"alpha": 2}),
                output_stem("猫", {}), output_stem("犬", {})}) == 5


def test_generate_writes_tsam_png(tmp_path, capsys):
    assert gen(tmp_path) == 0
    captured = capsys.readouterr()
    png = one(tmp_path, f"{SLUG}-*_seed0_tsam.png")
    assert png.is_file() and str(png) in captured.out
    assert captured.err.count(tsam_diffusion.tiny.TINY_NOTE) == 1
    summary = json.loads(one(tmp_path, f"{SLUG}-*_seed0_diagnostics.json").read_text())
    assert summary["prompt"] == PROMPT and summary["seed"] == 0 and summary["model"] == "tiny-sd"
    assert summary["config"]["name"] == "sd-tifa" and summary["tokens"][1] == "black" and summary["updates"] >= 1


def test_generate_compare_and_maps(tmp_path, capsys):
    assert gen(tmp_path, "--compare", "--save-maps", "--seed", "1", "2", "--alpha", "20", "--gamma", "2") == 0
    out = capsys.readouterr().out.split()
    for seed in (1, 2):
        stem = str(one(tmp_path, f"{SLUG}-*_seed{seed}_tsam.png")).removesuffix("_tsam.png")
        files = [f"{stem}_{s}.png" for s in ("tsam", "baseline", "compare", "T", "S_first", "S_last",
                                              "maps_first", "maps_last")]
        for f in files:
            assert f in out
            with Image.open(f) as im:
                assert im.width > 0 and im.height > 0
        with Image.open(f"{stem}_tsam.png") as single, Image.open(f"{stem}_compare.png") as compare:
            assert compare.width > single.width
        assert json.loads(open(f"{stem}_diagnostics.json").read())["config"]["alpha"] == 20.0
    # The same seed without guidance is the baseline; with guidance the image differs.
    with Image.open(one(tmp_path, f"{SLUG}-*_seed1_tsam.png")) as a, Image.open(one(tmp_path, f"{SLUG}-*_seed1_baseline.png")) as b:
        assert a.tobytes() != b.tobytes()


def test_generate_no_tsam(tmp_path, capsys):
    assert gen(tmp_path, "--no-tsam") == 0
    assert one(tmp_path, f"{SLUG}-*_seed0_baseline.png").is_file()
    assert not list(tmp_path.glob("*_tsam.png")) and not list(tmp_path.glob("*.json"))


def test_compare_and_no_tsam_conflict(tmp_path, capsys):
    assert gen(tmp_path, "--compare", "--no-tsam") == 2
    assert "not allowed with" in capsys.readouterr().err


def test_missing_local_model_folder(tmp_path, capsys):
    assert gen(tmp_path, "--model", "./nope") == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err


def test_empty_prompt(tmp_path, capsys):
    assert main(["generate", "", "--steps", "4", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "empty" in err and "Traceback" not in err


def test_negative_alpha(tmp_path, capsys):
    assert gen(tmp_path, "--alpha", "-1") == 2
    err = capsys.readouterr().err
    assert "alpha" in err and "Traceback" not in err


def test_bad_argparse_value(tmp_path, capsys):
    assert gen(tmp_path, "--steps", "four") == 2
    assert gen(tmp_path, "--preset", "nope") == 2


def test_entry_point_subprocess(tmp_path):
    env = {**os.environ, "COLUMNS": "200"}
    ok = subprocess.run([sys.executable, "-m", "tsam_diffusion.cli", "generate", "a cat and a dog", "--model", "tiny-sd",
                         "--steps", "4", "--out", str(tmp_path)], capture_output=True, text=True, env=env, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert str(one(tmp_path, "a-cat-and-a-dog-*_seed0_tsam.png")) in ok.stdout.split()
    bad = subprocess.run([sys.executable, "-m", "tsam_diffusion.cli", "generate", "x", "--model", "./nope"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 2 and "does not exist" in bad.stderr and "Traceback" not in bad.stderr


def test_readme_main_command_on_the_default_model(tmp_path, capsys):
    """README's main command: the bundled tsam-mini, its preset, steps and scale, T-SAM and baseline side by side."""
    prompt, slug = "a red circle and a blue square", "a-red-circle-and-a-blue-square"
    assert main(["generate", prompt, "--compare", "--save-maps", "--out", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert tsam_diffusion.tiny.TINY_NOTE not in captured.err
    stem = str(one(tmp_path, f"{slug}-*_seed0_tsam.png")).removesuffix("_tsam.png")
    summary = json.loads(open(f"{stem}_diagnostics.json").read())
    assert summary["model"] == "tsam-mini" and summary["config"]["name"] == "mini"
    assert summary["num_inference_steps"] == 25 and summary["guidance_scale"] == 4.0
    assert summary["tokens"] == ["a", "red", "circle", "and", "a", "blue", "square"] and summary["updates"] >= 1
    with Image.open(f"{stem}_tsam.png") as a, Image.open(f"{stem}_baseline.png") as b:
        assert a.size == b.size == (32, 32) and a.tobytes() != b.tobytes()
    for kind in ("compare", "T", "S_first", "S_last", "maps_first", "maps_last"):
        assert f"{stem}_{kind}.png" in captured.out.split()


def test_every_subcommand_and_option_has_help():
    """`--help` explains every subcommand (a description) and every option and argument (a help text)."""
    import argparse

    from tsam_diffusion.cli import build_parser

    def walk(parser, path):
        yield path, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, f"{path} {name}")

    missing = []
    for path, parser in walk(build_parser(), "tsam"):
        if not (parser.description or "").strip():
            missing.append(f"{path}: no description")
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            if not (action.help or "").strip():
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}: no help")
    assert not missing, "\n".join(missing)


def test_import_prints_nothing():
    """Importing the library (diffusers and transformers included) warns about nothing the user has to do."""
    code = "import tsam_diffusion.pipeline, tsam_diffusion.bench.metrics, tsam_diffusion.mini.model"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stderr == "" and done.stdout == "", done.stderr


@pytest.mark.parametrize("model, preset, size", [("tiny-pixart", "pixart", 256), ("tiny-sdxl", "sdxl", 128)])
def test_generate_on_other_families(tmp_path, capsys, model, preset, size):
    """The adapter comes from the loaded pipeline's class; the family's preset, --compare and --save-maps work."""
    assert main(["generate", PROMPT, "--model", model, "--steps", "2", "--compare", "--save-maps", "--out", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert captured.err.count(tsam_diffusion.tiny.TINY_NOTE) == 1
    summary = json.loads(one(tmp_path, f"{SLUG}-*_seed0_diagnostics.json").read_text())
    assert summary["model"] == model and summary["config"]["name"] == preset and summary["updates"] >= 1
    assert summary["height"] == summary["width"] == size
    for kind in ("tsam", "baseline", "compare", "T", "S_first", "maps_first"):
        assert one(tmp_path, f"{SLUG}-*_seed0_{kind}.png").is_file()
