"""A user's own prompt file (``.txt`` / ``.jsonl`` / ``.csv``) read as the suite ``file:<stem>``.

This module is pure Python: it imports neither torch nor diffusers.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from .prompts import Prompt, build_prompts, text_lines

__all__ = ["USER_FILE_EXTENSIONS", "load_prompts_file"]

USER_FILE_EXTENSIONS = (".csv", ".jsonl", ".txt")


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
    for n, line in enumerate(text_lines(text), start=1):
        line = line.strip()
        if line and not line.startswith("#"):
            rows.append((n, None, line, {}))
    return rows


def _read_jsonl(path: Path, text: str) -> list[tuple[int, str | None, str, dict]]:
    rows = []
    for n, line in enumerate(text_lines(text), start=1):
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
    return build_prompts(f"file:{path.stem}", ((pid, text, meta) for _, pid, text, meta in rows))
