"""Prompt suites for the benchmark harness, and a loader for a user's own prompt files.

Shipped suites (data under ``tsam_diffusion/data/prompts``, copied unchanged from the public
repositories named in ``PROVENANCE.md`` there)::

    ae-objects, ae-animals-objects, ae-animals    Attend-and-Excite (66 / 144 / 66)
    tifa-v1                                       TIFA v1.0 text inputs (4,081)
    geneval                                       GenEval (553)
    t2i-compbench-<category>                      T2I-CompBench val split, 8 categories (300 each)
    parti                                         PartiPrompts (1,632)
    cc500                                         CC-500 (446; 432 distinct texts)

``list_suites()`` lists them, ``load_suite(name)`` loads one, ``load_prompts_file(path)`` (``bench.prompt_files``, re-exported here) reads a
``.txt`` / ``.jsonl`` / ``.csv`` file of your own (suite name ``file:<stem>``).

Prompt ids
----------
Every prompt has an id ``"{suite}:{key}"`` that is unique within its suite and stable:

* ``key`` is the source's own id where it has one (TIFA's ``id``, e.g. ``tifa-v1:coco_301091``;
  the ``id`` field / column of a user file);
* otherwise ``key`` is a content hash: the first 10 hex digits of the SHA-1 of the prompt text,
  ``text.strip().lower()``, UTF-8 encoded. Such an id does not change when the file is reordered
  or other prompts are added or removed;
* when several prompts of one suite hash alike (the same text, up to case and surrounding
  whitespace - CC-500 repeats 14 of its prompts), the first in file order keeps the bare hash and
  the later ones get ``-2``, ``-3``, ... in file order. Only these suffixed ids depend on order.
  A generated id never takes a key that an explicit id of the same file already uses.

Prompt text is the source text with surrounding whitespace stripped (some TIFA and Parti prompts
end in a space; T2I-CompBench files mix CRLF and LF line ends); nothing else is changed. In
particular the Attend-and-Excite list keeps its original spelling ("a elephant"), and the
PartiPrompts TSV is split on tabs without CSV quote handling, so that the literal quotes of
``"G I G G L E" painted in thick colorful lettering ...`` survive.

This module is pure Python: it imports neither torch nor diffusers.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import partial
from importlib.resources import files
from typing import TYPE_CHECKING, Any, Callable

from .prompt_files import USER_FILE_EXTENSIONS, load_prompts_file  # re-exported: suites and user files, one place
from .prompts import Prompt, build_prompts, content_key, text_lines

if TYPE_CHECKING:  # importlib.resources.abc is 3.11+
    from importlib.resources.abc import Traversable

__all__ = [
    "Prompt",
    "SuiteSpec",
    "SUITES",
    "USER_FILE_EXTENSIONS",
    "content_key",
    "list_suites",
    "load_prompts_file",
    "load_suite",
]


@dataclass(frozen=True)
class SuiteSpec:
    """A named suite: ``count`` is the number of prompts ``load()`` must return."""

    name: str
    description: str
    count: int
    loader: Callable[[], list[Prompt]] = field(repr=False, compare=False)

    def load(self) -> list[Prompt]:
        prompts = self.loader()
        if len(prompts) != self.count:  # shipped data damaged or replaced
            raise RuntimeError(
                f"suite {self.name!r}: expected {self.count} prompts, the data gave {len(prompts)}"
            )
        return prompts


# --------------------------------------------------------------------------------------------
# shipped suites


def _data_root() -> Traversable:
    return files("tsam_diffusion") / "data" / "prompts"


def _read(relpath: str) -> str:
    return _data_root().joinpath(*relpath.split("/")).read_text(encoding="utf-8")


_AE_FILE = "attend_excite/a.e_prompts.txt"


def _load_ae(suite: str, subset: str) -> list[Prompt]:
    data = json.loads(_read(_AE_FILE))
    return build_prompts(suite, ((None, t.strip(), {"subset": subset}) for t in data[subset]))


_TIFA_FILE = "tifa/tifa_v1.0_text_inputs.json"
# id prefix in tifa_v1.0_text_inputs.json -> source dataset
_TIFA_SOURCES = {
    "coco": "coco",
    "partiprompt": "partiprompt",
    "paintskill": "paintskill",
    "drawbench": "drawbench",
}


def _load_tifa(suite: str) -> list[Prompt]:
    records = []
    ids: set[str] = set()
    for rec in json.loads(_read(_TIFA_FILE)):
        tid = rec["id"]
        prefix = tid.rsplit("_", 1)[0]
        if prefix not in _TIFA_SOURCES:
            raise RuntimeError(f"{_TIFA_FILE}: unknown id prefix in {tid!r}")
        if tid in ids:
            raise RuntimeError(f"{_TIFA_FILE}: duplicate id {tid!r}")
        ids.add(tid)
        meta: dict[str, Any] = {"source": _TIFA_SOURCES[prefix]}
        if rec.get("coco_val_id") is not None:
            meta["coco_val_id"] = rec["coco_val_id"]
        records.append((tid, rec["caption"].strip(), meta))
    return build_prompts(suite, records)


_GENEVAL_FILE = "geneval/evaluation_metadata.jsonl"


def _load_geneval(suite: str) -> list[Prompt]:
    records = []
    for line in text_lines(_read(_GENEVAL_FILE)):
        if line.strip():
            rec = json.loads(line)
            # meta is GenEval's whole record (tag, include, exclude?, prompt), as its evaluator
            # expects it in each image folder's metadata.jsonl
            records.append((None, rec["prompt"].strip(), rec))
    return build_prompts(suite, records)


_COMPBENCH_CATEGORIES = (
    "3d_spatial",
    "color",
    "complex",
    "non_spatial",
    "numeracy",
    "shape",
    "spatial",
    "texture",
)


def _load_compbench(suite: str, category: str) -> list[Prompt]:
    lines = text_lines(_read(f"t2i_compbench/{category}_val.txt"))
    return build_prompts(
        suite, ((None, ln.strip(), {"category": category}) for ln in lines if ln.strip())
    )


_PARTI_FILE = "parti/PartiPrompts.tsv"
_PARTI_HEADER = ["Prompt", "Category", "Challenge", "Note"]


def _load_parti(suite: str) -> list[Prompt]:
    lines = text_lines(_read(_PARTI_FILE))
    if lines[0].split("\t") != _PARTI_HEADER:
        raise RuntimeError(f"{_PARTI_FILE}: unexpected header {lines[0]!r}")
    records = []
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        cells = line.split("\t")  # no CSV quoting: quotes are part of the prompts
        if len(cells) != len(_PARTI_HEADER):
            raise RuntimeError(f"{_PARTI_FILE}:{n}: expected 4 tab-separated fields")
        text, category, challenge, note = (c.strip() for c in cells)
        records.append((None, text, {"category": category, "challenge": challenge, "note": note}))
    return build_prompts(suite, records)


_CC500_FILE = "cc500/CC-500.txt"
_CC500_LINES = 446  # CC-500 proper; the file goes on with 156 other prompts


def _load_cc500(suite: str) -> list[Prompt]:
    lines = text_lines(_read(_CC500_FILE))[:_CC500_LINES]
    return build_prompts(suite, ((None, ln.strip(), {}) for ln in lines if ln.strip()))


def _load_shapes(suite: str) -> list[Prompt]:
    """ShapesBench (``tsam_diffusion.mini.shapesbench``): JSON lines with id, prompt, template, spec."""
    records = [json.loads(line) for line in text_lines(_read(f"shapes/{suite}.jsonl")) if line.strip()]
    return build_prompts(suite, ((r["id"], r["prompt"], {"template": r["template"], "spec": r["spec"]}) for r in records))


def _registry() -> dict[str, SuiteSpec]:
    specs = [
        SuiteSpec("ae-objects", "Attend-and-Excite: two objects, 'a X and a Y' "
                  "(Chefer et al. 2023)", 66, partial(_load_ae, "ae-objects", "objects")),
        SuiteSpec("ae-animals-objects", "Attend-and-Excite: an animal and an object, e.g. "
                  "'a cat with a crown'", 144,
                  partial(_load_ae, "ae-animals-objects", "animals_objects")),
        SuiteSpec("ae-animals", "Attend-and-Excite: two animals, 'a X and a Y'", 66,
                  partial(_load_ae, "ae-animals", "animals")),
        SuiteSpec("tifa-v1", "TIFA v1.0 text inputs: COCO 2000, PartiPrompts 1420, "
                  "PaintSkills 500, DrawBench 161 (meta: source)", 4081,
                  partial(_load_tifa, "tifa-v1")),
        SuiteSpec("geneval", "GenEval: single/two objects, counting, colors, position, "
                  "color attribution (meta: GenEval metadata record)", 553,
                  partial(_load_geneval, "geneval")),
    ]
    for category in _COMPBENCH_CATEGORIES:
        name = "t2i-compbench-" + category.replace("_", "-")
        specs.append(SuiteSpec(
            name, f"T2I-CompBench val split, category {category}", 300,
            partial(_load_compbench, name, category),
        ))
    specs += [
        SuiteSpec("parti", "PartiPrompts (meta: category, challenge, note)", 1632,
                  partial(_load_parti, "parti")),
        SuiteSpec("cc500", "CC-500: two objects with colours, 'a red X and a blue Y' "
                  "(first 446 lines of CC-500.txt; 14 texts appear twice)", 446,
                  partial(_load_cc500, "cc500")),
        SuiteSpec("shapes-dev", "ShapesBench dev split for tsam-mini (tune here), scored exactly by the "
                  "'shapes' metric (meta: template, spec)", 116, partial(_load_shapes, "shapes-dev")),
        SuiteSpec("shapes-test", "ShapesBench test split for tsam-mini (report here; never tune)", 116,
                  partial(_load_shapes, "shapes-test")),
    ]
    return {s.name: s for s in specs}


SUITES: dict[str, SuiteSpec] = _registry()


def list_suites() -> list[tuple[str, int, str]]:
    """``(name, count, description)`` of every shipped suite, in registry order."""
    return [(s.name, s.count, s.description) for s in SUITES.values()]


def load_suite(name: str) -> list[Prompt]:
    """The prompts of a shipped suite, in the source's order."""
    spec = SUITES.get(name)
    if spec is None:
        raise ValueError(f"unknown prompt suite {name!r}; valid names: {', '.join(SUITES)}")
    return spec.load()


STRATUM_KEYS = ("template", "category", "tag", "source")
"""Prompt metadata that groups a suite (ShapesBench templates, Parti categories, GenEval tags, TIFA sources)."""


def stratum(prompt: Prompt) -> str:
    """The prompt's group for sampling: the first of ``STRATUM_KEYS`` in its metadata, else one group."""
    meta = prompt.meta or {}
    return next((f"{k}={meta[k]}" for k in STRATUM_KEYS if meta.get(k) not in (None, "")), "")


def take(prompts: list[Prompt], n: int | None) -> list[Prompt]:
    """``n`` prompts spread over the groups of ``prompts`` (see ``stratum``), deterministically.

    The groups take turns in order of first appearance, each giving its prompts in suite order, so
    every group is represented as soon as ``n`` reaches the number of groups, and ``take(p, n)`` is
    a prefix of ``take(p, n + 1)`` (a run continued with a larger ``--limit`` reuses its images).
    The result keeps suite order. ``None`` (or ``n`` >= the suite) takes everything.
    """
    if n is None or n >= len(prompts):
        return list(prompts)
    groups: dict[str, list[int]] = {}
    for i, prompt in enumerate(prompts):
        groups.setdefault(stratum(prompt), []).append(i)
    turns = sorted((rank, order, i) for order, idx in enumerate(groups.values()) for rank, i in enumerate(idx))
    return [prompts[i] for i in sorted(i for _, _, i in turns[:n])]
