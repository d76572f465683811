"""A human study's tables, in the run's own database (``RUN_DIR/run.sqlite``).

- ``study_items(item_id, comparison, kind, prompt_id, prompt, seed, method_a, method_b, image_a, image_b)``:
  what participants judge. ``kind`` is ``pair`` (one prompt and seed, two methods) or ``check``
  (an attention check: ``image_b`` is of another prompt, so ``a`` is the right answer).
- ``study_settings(key, value)``: how the items were drawn (JSON values).
- ``study_participants(pid, created)``: anonymous ids (128 random bits: knowing an id is what lets
  one answer as that participant, so ids are never listed to other participants).
- ``study_served(pid, item_id, left, served)``: which image was shown on the left and when.
- ``study_answers(pid, item_id, choice, winner, seconds, created)``: one answer per participant and
  item; ``choice`` is what was clicked (``left``/``right``/``tie``), ``winner`` the method side
  (``a``/``b``/``tie``).

Every write is one short ``BEGIN IMMEDIATE`` transaction (``RunDB``), so answers survive a crash
or restart and many participants can answer at once.
"""
from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any

from ..bench.db import BenchError, RunDB

SCHEMA = """
CREATE TABLE IF NOT EXISTS study_settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS study_items (
    item_id INTEGER PRIMARY KEY, comparison TEXT NOT NULL, kind TEXT NOT NULL, prompt_id TEXT NOT NULL,
    prompt TEXT NOT NULL, seed INTEGER NOT NULL, method_a TEXT NOT NULL, method_b TEXT NOT NULL,
    image_a TEXT NOT NULL, image_b TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS study_participants (pid TEXT PRIMARY KEY, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS study_served (
    pid TEXT NOT NULL, item_id INTEGER NOT NULL, left TEXT NOT NULL, served REAL NOT NULL, PRIMARY KEY (pid, item_id)
);
CREATE TABLE IF NOT EXISTS study_answers (
    pid TEXT NOT NULL, item_id INTEGER NOT NULL, choice TEXT NOT NULL, winner TEXT NOT NULL, seconds REAL,
    created REAL NOT NULL, PRIMARY KEY (pid, item_id)
);
"""
ITEM_COLUMNS = ("item_id", "comparison", "kind", "prompt_id", "prompt", "seed", "method_a", "method_b", "image_a", "image_b")
CHOICES = ("left", "right", "tie")


class StudyError(ValueError):
    """Bad input to a study (unknown participant or item, an answer out of turn); the message says what to do."""


class StudyStore:
    """The study tables of one run directory."""

    def __init__(self, run_dir: str | Path, *, create: bool = False) -> None:
        self.db = RunDB(run_dir, create=False)
        self.run_dir = self.db.run_dir
        with self.db.connection() as con:
            con.executescript(SCHEMA)
        if not create and not self.items():
            raise StudyError(f"{self.run_dir} has no study yet; draw one with `tsam study create {self.run_dir} --pairs ...`")

    # ----------------------------------------------------------------- items
    def replace_items(self, items: list[dict[str, Any]], settings: dict[str, Any]) -> None:
        """Store a new draw; refused once anyone has answered (their answers would lose their items)."""
        with self.db.transaction() as con:
            if con.execute("SELECT COUNT(*) FROM study_answers").fetchone()[0]:
                raise StudyError("this study already has answers; drawing again would orphan them. Use another run "
                                 "directory (or copy this one) for a new study")
            con.execute("DELETE FROM study_items")
            con.execute("DELETE FROM study_served")
            con.execute("DELETE FROM study_settings")
            con.executemany(f"INSERT INTO study_items ({', '.join(ITEM_COLUMNS)}) VALUES ({', '.join('?' * len(ITEM_COLUMNS))})",
                            [tuple(item[c] for c in ITEM_COLUMNS) for item in items])
            con.executemany("INSERT INTO study_settings VALUES (?, ?)", [(k, json.dumps(v)) for k, v in settings.items()])

    def items(self) -> list[dict[str, Any]]:
        with self.db.connection() as con:
            rows = con.execute(f"SELECT {', '.join(ITEM_COLUMNS)} FROM study_items ORDER BY item_id").fetchall()
        return [dict(zip(ITEM_COLUMNS, r)) for r in rows]

    def item(self, item_id: int) -> dict[str, Any]:
        with self.db.connection() as con:
            row = con.execute(f"SELECT {', '.join(ITEM_COLUMNS)} FROM study_items WHERE item_id = ?", (item_id,)).fetchone()
        if row is None:
            raise StudyError(f"no item {item_id} in this study")
        return dict(zip(ITEM_COLUMNS, row))

    def settings(self) -> dict[str, Any]:
        with self.db.connection() as con:
            return {k: json.loads(v) for k, v in con.execute("SELECT key, value FROM study_settings").fetchall()}

    # ----------------------------------------------------------------- participants
    def new_participant(self) -> str:
        pid = secrets.token_hex(16)
        with self.db.transaction() as con:
            con.execute("INSERT INTO study_participants VALUES (?, ?)", (pid, time.time()))
        return pid

    def check_participant(self, pid: str) -> None:
        with self.db.connection() as con:
            known = con.execute("SELECT 1 FROM study_participants WHERE pid = ?", (pid,)).fetchone()
        if not known:
            raise StudyError("unknown participant id; start the study again from its first page, or check the id you "
                             "were given")

    def answered(self, pid: str) -> set[int]:
        with self.db.connection() as con:
            return {r[0] for r in con.execute("SELECT item_id FROM study_answers WHERE pid = ?", (pid,))}

    def serve(self, pid: str, item_id: int, left: str) -> str:
        """Record that ``item_id`` is shown to ``pid`` (first time only); returns the side shown on the left."""
        with self.db.transaction() as con:
            row = con.execute("SELECT left FROM study_served WHERE pid = ? AND item_id = ?", (pid, item_id)).fetchone()
            if row:
                return row[0]
            con.execute("INSERT INTO study_served VALUES (?, ?, ?, ?)", (pid, item_id, left, time.time()))
        return left

    def shown_left(self, pid: str, item_id: int) -> str:
        """The side shown on the left of an item this participant has been shown (StudyError if none)."""
        with self.db.connection() as con:
            row = con.execute("SELECT left FROM study_served WHERE pid = ? AND item_id = ?", (pid, item_id)).fetchone()
        if row is None:
            raise StudyError(f"item {item_id} has not been shown to this participant")
        return row[0]

    def answer(self, pid: str, item_id: int, choice: str) -> None:
        """Store one answer, transactionally, with the time since the item was served."""
        if choice not in CHOICES:
            raise StudyError(f"an answer is one of {', '.join(CHOICES)}, got {choice!r}")
        with self.db.transaction() as con:
            if not con.execute("SELECT 1 FROM study_participants WHERE pid = ?", (pid,)).fetchone():
                raise StudyError("unknown participant id")
            served = con.execute("SELECT left, served FROM study_served WHERE pid = ? AND item_id = ?", (pid, item_id)).fetchone()
            if served is None:
                raise StudyError(f"item {item_id} was not shown to this participant; answer the item on the page")
            if con.execute("SELECT 1 FROM study_answers WHERE pid = ? AND item_id = ?", (pid, item_id)).fetchone():
                raise StudyError(f"item {item_id} is already answered")
            left, when = served
            winner = "tie" if choice == "tie" else (left if choice == "left" else ("b" if left == "a" else "a"))
            now = time.time()
            con.execute("INSERT INTO study_answers VALUES (?, ?, ?, ?, ?, ?)", (pid, item_id, choice, winner, now - when, now))

    def answers(self) -> list[dict[str, Any]]:
        cols = ("pid", "item_id", "choice", "winner", "seconds", "created")
        with self.db.connection() as con:
            return [dict(zip(cols, r)) for r in con.execute(f"SELECT {', '.join(cols)} FROM study_answers ORDER BY created")]

    def image_path(self, relative: str) -> Path:
        """An item's image inside the run directory (never outside it)."""
        root = self.run_dir.resolve()
        path = (root / relative).resolve()
        if root not in path.parents or not path.is_file():
            raise BenchError(f"image {relative!r} is not a file of the run directory")
        return path
