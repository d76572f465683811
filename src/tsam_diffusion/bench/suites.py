"""Prompt suites for the benchmark harness, and a loader for a user's own prompt files.

Shipped suites (data under ``tsam_diffusion/data/prompts``, copied unchanged from the public
repositories named in ``PROVENANCE.md`` there)::

    ae-objects, ae-animals-objects, ae-animals    Attend-and-Excite (66 / 144 / 66)
    tifa-v1                                       TIFA v1.0 text inputs (4,081)
    geneval                                       GenEval (553)
    t2i-compbench-<category>                      T2I-CompBench val split, 8 categories (300 each)
    parti                                         PartiPrompts (1,632)
    cc500                                         CC-500 (446; 432 distinct texts)

``list_suites()`` lists them, ``load_suite(name)`` loads one, ``load_prompts_file(path)`` reads a
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

import csv
import hashlib
import io
import json
from dataclasses import dataclass, field
from functools import partial
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

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

USER_FILE_EXTENSIONS = (".csv", ".jsonl", ".txt")
_KEY_HEX_DIGITS = 10


@dataclass(frozen=True)
class Prompt:
    """One prompt of a suite. ``meta`` holds the source's extra fields (see each suite)."""

    id: str
    text: str
    suite: str
    meta: dict = field(default_factory=dict, hash=False)


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
# ids


def content_key(text: str) -> str:
    """The content-hash key of a prompt: SHA-1 of ``text.strip().lower()``, first 10 hex digits."""
    return hashlib.sha1(text.strip().lower().encode("utf-8")).hexdigest()[:_KEY_HEX_DIGITS]


def _build(suite: str, records: Iterable[tuple[str | None, str, dict]]) -> list[Prompt]:
    """Make prompts from ``(explicit_key_or_None, text, meta)`` records, in order.

    Explicit keys must already be unique (callers report duplicates with file and line).
    """
    records = list(records)
    used = {key for key, _, _ in records if key is not None}
    seen: dict[str, int] = {}  # content hash -> how many prompts carried it so far
    out = []
    for key, text, meta in records:
        if key is None:
            base = content_key(text)
            n = seen.get(base, 0) + 1
            key = base if n == 1 else f"{base}-{n}"
            while key in used:
                n += 1
                key = f"{base}-{n}"
            seen[base] = n
            used.add(key)
        out.append(Prompt(id=f"{suite}:{key}", text=text, suite=suite, meta=meta))
    return out


# --------------------------------------------------------------------------------------------
# shipped suites


def _data_root() -> Traversable:
    return files("tsam_diffusion") / "data" / "prompts"


def _read(relpath: str) -> str:
    return _data_root().joinpath(*relpath.split("/")).read_text(encoding="utf-8")


def _lines(text: str) -> list[str]:
    """Split on LF, CRLF or CR only (``str.splitlines`` also splits on U+2028 and friends)."""
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


_AE_FILE = "attend_excite/a.e_prompts.txt"


def _load_ae(suite: str, subset: str) -> list[Prompt]:
    data = json.loads(_read(_AE_FILE))
    return _build(suite, ((None, t.strip(), {"subset": subset}) for t in data[subset]))


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
    return _build(suite, records)


_GENEVAL_FILE = "geneval/evaluation_metadata.jsonl"


def _load_geneval(suite: str) -> list[Prompt]:
    records = []
    for line in _lines(_read(_GENEVAL_FILE)):
        if line.strip():
            rec = json.loads(line)
            # meta is GenEval's whole record (tag, include, exclude?, prompt), as its evaluator
            # expects it in each image folder's metadata.jsonl
            records.append((None, rec["prompt"].strip(), rec))
    return _build(suite, records)


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
    lines = _lines(_read(f"t2i_compbench/{category}_val.txt"))
    return _build(
        suite, ((None, ln.strip(), {"category": category}) for ln in lines if ln.strip())
    )


_PARTI_FILE = "parti/PartiPrompts.tsv"
_PARTI_HEADER = ["Prompt", "Category", "Challenge", "Note"]


def _load_parti(suite: str) -> list[Prompt]:
    lines = _lines(_read(_PARTI_FILE))
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
    return _build(suite, records)


_CC500_FILE = "cc500/CC-500.txt"
_CC500_LINES = 446  # CC-500 proper; the file goes on with 156 other prompts


def _load_cc500(suite: str) -> list[Prompt]:
    lines = _lines(_read(_CC500_FILE))[:_CC500_LINES]
    return _build(suite, ((None, ln.strip(), {}) for ln in lines if ln.strip()))


def _load_shapes(suite: str) -> list[Prompt]:
    """ShapesBench (``tsam_diffusion.mini.shapesbench``): JSON lines with id, prompt, template, spec."""
    records = [json.loads(line) for line in _lines(_read(f"shapes/{suite}.jsonl")) if line.strip()]
    return _build(suite, ((r["id"], r["prompt"], {"template": r["template"], "spec": r["spec"]}) for r in records))


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


# --------------------------------------------------------------------------------------------
# user files


def _err(path: Path, line: int | None, reason: str) -> ValueError:
    return ValueError(f"{path}:{line}: {reason}" if line is not None else f"{path}: {reason}")


def _decode(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise _err(path, line, f"not valid UTF-8 ({e.reason})") from None


def _explicit_id(path: Path, line: int, value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _err(path, line, f"'id' must be a string or an integer, got {type(value).__name__}")
    value = str(value).strip()
    return value or None


def _prompt_text(path: Path, line: int, fields: dict[str, Any]) -> tuple[str, str]:
    """``(field name, stripped text)`` of the prompt field of a record."""
    key = "prompt" if "prompt" in fields else "text" if "text" in fields else None
    if key is None:
        raise _err(path, line, "missing prompt field (expected 'prompt' or 'text')")
    value = fields[key]
    if not isinstance(value, str):
        raise _err(path, line, f"{key!r} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise _err(path, line, f"empty prompt text in {key!r}")
    return key, value.strip()


def _read_txt(path: Path, text: str) -> list[tuple[int, str | None, str, dict]]:
    rows = []
    for n, line in enumerate(_lines(text), start=1):
        line = line.strip()
        if line and not line.startswith("#"):
            rows.append((n, None, line, {}))
    return rows


def _read_jsonl(path: Path, text: str) -> list[tuple[int, str | None, str, dict]]:
    rows = []
    for n, line in enumerate(_lines(text), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise _err(path, n, f"invalid JSON: {e.msg} (column {e.colno})") from None
        if not isinstance(obj, dict):
            raise _err(path, n, f"expected a JSON object, got {type(obj).__name__}")
        key, prompt = _prompt_text(path, n, obj)
        pid = _explicit_id(path, n, obj.get("id"))
        meta = {k: v for k, v in obj.items() if k not in (key, "id")}
        rows.append((n, pid, prompt, meta))
    return rows


def _read_csv(path: Path, text: str) -> list[tuple[int, str | None, str, dict]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        return []
    except csv.Error as e:
        raise _err(path, reader.line_num or 1, f"malformed CSV: {e}") from None
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise _err(path, 1, f"duplicate column name(s) {dupes}")
    if "prompt" not in header and "text" not in header:
        raise _err(path, 1, f"missing prompt field: no 'prompt' or 'text' column in {header}")
    rows = []
    end = reader.line_num
    while True:
        start = end + 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise _err(path, start, f"malformed CSV: {e}") from None
        end = reader.line_num
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            raise _err(path, start, f"expected {len(header)} fields, got {len(cells)}")
        record = dict(zip(header, cells))
        key, prompt = _prompt_text(path, start, record)
        pid = _explicit_id(path, start, record.get("id"))
        meta = {k: v for k, v in record.items() if k not in (key, "id")}
        rows.append((start, pid, prompt, meta))
    return rows


_READERS = {".txt": _read_txt, ".jsonl": _read_jsonl, ".csv": _read_csv}


def load_prompts_file(path: str | Path) -> list[Prompt]:
    """Read a user's prompt file as the suite ``file:<stem>``.

    * ``.txt``: one prompt per line; blank lines and lines starting with ``#`` are skipped;
    * ``.jsonl``: one JSON object per line with ``prompt`` (or ``text``), an optional ``id``
      (string or integer); the other keys go to ``meta``; blank lines are skipped;
    * ``.csv``: a header row with a ``prompt`` (or ``text``) column and an optional ``id``
      column; the other columns go to ``meta``; an empty ``id`` cell means no id.

    Prompts without an id get a content-hash id (see the module docstring). Problems raise
    ``ValueError("<path>:<line>: <reason>")``.
    """
    path = Path(path)
    ext = path.suffix.lower()
    reader = _READERS.get(ext)
    if reader is None:
        raise _err(path, None, f"unsupported prompt file extension {path.suffix or '(none)'!r}; "
                   f"supported: {', '.join(USER_FILE_EXTENSIONS)}")
    rows = reader(path, _decode(path))
    if not rows:
        raise _err(path, None, "no prompts found")
    first_line: dict[str, int] = {}
    for n, pid, _, _ in rows:
        if pid is not None:
            if pid in first_line:
                raise _err(path, n, f"duplicate id {pid!r} (first used on line {first_line[pid]})")
            first_line[pid] = n
    return _build(f"file:{path.stem}", ((pid, text, meta) for _, pid, text, meta in rows))
