"""A run's results without its images: ``tsam bench export`` and ``tsam bench import``.

An export is one gzip-compressed JSON-lines file: a header (format, the run's settings and method
configurations), then one line per finished image with its database row and its scores. It is small
(about 60-150 bytes an image), so results can be archived, committed or collected from machines that
share no disk; importing several exports into one run directory merges them for ``tsam bench report``
and the benchmark scripts. The PNGs are not included: an imported job is not done for ``tsam bench run``
(its image file is missing), so continuing an imported run generates it again.
"""
from __future__ import annotations

import gzip
import json
import os
import zlib
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterator

from .db import BenchError, RunDB, check_one_device, devices

FORMAT = "tsam-bench-export"
VERSION = 1


def export_run(run_dir: str | Path, out: str | Path) -> int:
    """Write ``run_dir``'s rows and scores to ``out`` (gzip JSON lines, written atomically); returns the rows."""
    db = RunDB(run_dir, create=False)
    scores: dict[str, dict[str, dict[str, float | None]]] = defaultdict(dict)
    for job, metric in db.scored():
        scores[job].setdefault(metric, {})
    for s in db.scores():
        scores[s["job_id"]].setdefault(s["metric"], {})[s["key"]] = s["value"]
    rows = db.images()
    out = Path(out)
    tmp = out.with_name(out.name + ".part")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(tmp, "wt", encoding="utf-8") as f:
            header = {"format": FORMAT, "version": VERSION, "settings": db.settings(), "methods": db.methods()}
            f.write(json.dumps(header, sort_keys=True) + "\n")
            for row in rows:
                f.write(json.dumps({"row": row, "scores": scores.get(row["job_id"], {})}, sort_keys=True) + "\n")
        os.replace(tmp, out)
    except OSError as e:
        raise BenchError(f"cannot write {out}: {e}; check the folder and free space, then rerun") from e
    return len(rows)


def import_runs(files: list[str | Path], run_dir: str | Path) -> dict[str, int]:
    """Merge exports into ``run_dir`` (made if missing); returns counts (rows imported, rows already there).

    Every export must have the run's settings and the same configuration under each method name (as
    ``tsam bench run`` requires when continuing a run); a job already in ``run_dir`` keeps its row.
    """
    parsed = [(Path(f), *_read(Path(f))) for f in files]  # every file read and checked before anything is written
    _check_agree(parsed)
    made_on = devices([line["row"] for _, _, lines in parsed for line in lines])
    check_one_device(made_on, "importing these files together")
    try:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BenchError(f"cannot make the run directory {run_dir}: {e}") from e
    db = RunDB(run_dir)
    there = db.images()
    check_one_device(devices(there) | made_on, f"importing into {run_dir}")
    for _, header, _ in parsed:
        db.claim_settings(header["settings"])
        for name, config in header["methods"].items():
            db.claim_method(name, config)
    have = {r["job_id"] for r in there}
    new = {}
    for _, _, lines in parsed:
        for line in lines:
            job = line["row"]["job_id"]
            if job not in have:
                new.setdefault(job, line)
    if new:
        db.add_images([line["row"] for line in new.values()])
        by_metric: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
        for job, line in new.items():
            for metric, values in line["scores"].items():
                by_metric[metric][job] = values
        for metric, values in by_metric.items():
            db.add_scores(metric, values)
    total = sum(len(lines) for _, _, lines in parsed)
    return {"imported": len(new), "already there": total - len(new)}


def _check_agree(parsed: list[tuple[Path, dict[str, Any], list[dict[str, Any]]]]) -> None:
    """The files' settings, and each method name's configuration, are the same in every file."""
    first, header, _ = parsed[0]
    methods: dict[str, tuple[Path, Any]] = {}
    for path, h, _ in parsed:
        if h["settings"] != header["settings"]:
            raise BenchError(f"{path} and {first} come from runs with other settings ({h['settings']} vs "
                             f"{header['settings']}); import them into different run directories")
        for name, config in h["methods"].items():
            other = methods.setdefault(name, (path, config))
            if other[1] != config:
                raise BenchError(f"method {name!r} has another configuration in {path} than in {other[0]}; "
                                 "import them into different run directories")


def _read(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(header, lines) of one export; any problem is one ``BenchError`` naming the file."""
    def fail(why: str) -> BenchError:
        return BenchError(f"{path} is not a readable `tsam bench export` file ({why}); export the run again "
                          "with `tsam bench export RUN_DIR --out FILE`")

    try:
        lines = list(_lines(path))
    except FileNotFoundError:
        raise BenchError(f"{path} does not exist; give files written by `tsam bench export`") from None
    except (OSError, EOFError, zlib.error, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise fail(str(e) or type(e).__name__) from None
    header = lines[0] if lines else None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise fail("no export header")
    if header.get("version") != VERSION:
        raise fail(f"format version {header.get('version')}, this tsam reads {VERSION}")
    if not isinstance(header.get("settings"), dict) or not isinstance(header.get("methods"), dict):
        raise fail("a header without the run's settings and methods")
    body = lines[1:]
    if not all(isinstance(x, dict) and isinstance(x.get("row"), dict) and "job_id" in x["row"]
               and isinstance(x.get("scores"), dict) for x in body):
        raise fail("a line without a row and its scores")
    return header, body


def _lines(path: Path) -> Iterator[Any]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)
