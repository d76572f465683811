"""The run database: one SQLite file per run directory, safe for several processes at once.

Tables (``RUN_DIR/run.sqlite``):

- ``settings(key, value)``: the run's model and generation options (JSON values); a run continued
  with other values is refused.
- ``methods(name, config)``: each method's full configuration (JSON); continuing a run with another
  configuration under the same method name is refused.
- ``images(job_id, suite, prompt_id, prompt, prompt_meta, seed, method, config, image, model,
  versions, seconds, created, loss_first, loss_last, updates, skipped, diagnostics)``: one row per
  finished image, with its method's full configuration. ``image`` is the PNG's path relative to the run directory. A job is done when its row exists
  and its file is there. ``versions`` holds the software versions and the device the image was made
  on (``versions["device"]``, see ``check_one_device``).
- ``scores(job_id, metric, key, value)``: metric values, e.g. ``(job, "clip", "full", 0.31)``;
  ``scored(job_id, metric)``: the images a metric has seen (some get no value, e.g. TIFA without
  questions for the prompt), so that scoring resumes where it stopped.

Every write is one short transaction in WAL mode with a generous busy timeout, so processes of a
multi-GPU run can share the file; a process killed mid-write leaves the database consistent.
Opening a run checks the file first (SQLite's ``quick_check`` and the tables' columns): a damaged
file, or one that is not a run database, fails with one ``BenchError`` saying what to do.
"""
from __future__ import annotations

import json
import sqlite3
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, Iterator

DB_NAME = "run.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS methods (name TEXT PRIMARY KEY, config TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    job_id TEXT PRIMARY KEY, suite TEXT NOT NULL, prompt_id TEXT NOT NULL, prompt TEXT NOT NULL,
    prompt_meta TEXT NOT NULL, seed INTEGER NOT NULL, method TEXT NOT NULL, config TEXT NOT NULL, image TEXT NOT NULL,
    model TEXT NOT NULL, versions TEXT NOT NULL, seconds REAL, created REAL NOT NULL,
    loss_first REAL, loss_last REAL, updates INTEGER, skipped INTEGER, diagnostics TEXT
);
CREATE TABLE IF NOT EXISTS scores (
    job_id TEXT NOT NULL, metric TEXT NOT NULL, key TEXT NOT NULL, value REAL,
    PRIMARY KEY (job_id, metric, key)
);
CREATE TABLE IF NOT EXISTS scored (job_id TEXT NOT NULL, metric TEXT NOT NULL, PRIMARY KEY (job_id, metric));
"""

IMAGE_COLUMNS = ("job_id", "suite", "prompt_id", "prompt", "prompt_meta", "seed", "method", "config", "image", "model",
                 "versions", "seconds", "created", "loss_first", "loss_last", "updates", "skipped", "diagnostics")
JSON_COLUMNS = ("prompt_meta", "config", "versions", "diagnostics")


class BenchError(RuntimeError):
    """A benchmark cannot go on (bad input, unwritable output, damaged database); the message says what to do."""


class ConfigConflict(ValueError):
    """The run directory holds a run made with other settings or another method configuration."""


def devices(rows: list[dict[str, Any]]) -> set[str]:
    """The devices the rows' images were made on (``versions["device"]``; rows made before tsam recorded
    it have none and are left out: they agree with any device)."""
    return {d for r in rows if (d := (r.get("versions") or {}).get("device"))}


def check_one_device(found: set[str], where: str) -> None:
    """Refuse to put images from different devices in one run: the same seed gives other images on a
    CPU and a GPU (or on two kinds of GPU), so methods' images of one (prompt, seed) would not be paired."""
    if len(found) > 1:
        raise BenchError(f"{where} would mix images made on different devices ({', '.join(sorted(found))}): "
                         "the same seed makes other images on each, so the methods' images would not be "
                         "paired; keep each device's images in a run directory of their own")


class RunDB:
    """Access to ``RUN_DIR/run.sqlite``; open one per process.

    ``create=False`` (scoring, reports) refuses a directory without a database instead of starting one.
    """

    def __init__(self, run_dir: str | Path, *, create: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / DB_NAME
        if not create and not self.path.is_file():
            raise BenchError(f"{self.run_dir} holds no benchmark run (no {DB_NAME}); make one with `tsam bench run`")
        with self._connect() as con:  # read-only checks first: a foreign file is left as it was
            check = [r[0] for r in con.execute("PRAGMA quick_check").fetchall()]
            if check != ["ok"]:
                raise _db_error(self.path, sqlite3.DatabaseError(check[0] if check else "quick_check failed"))
            if create:
                con.executescript(SCHEMA)
            missing = _missing_columns(con)
            if missing:
                raise BenchError(f"{self.path} is not a run database of this version of tsam (missing: "
                                 f"{', '.join(missing)}); use another run directory")
            con.execute("PRAGMA journal_mode=WAL")  # persistent: set once, for every later connection

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection; any SQLite error on it becomes a ``BenchError`` that says what to do."""
        try:
            with closing(sqlite3.connect(self.path, timeout=60.0, isolation_level=None)) as con:
                con.execute("PRAGMA busy_timeout=60000")
                yield con
        except sqlite3.Error as e:
            raise _db_error(self.path, e) from None

    connection = _connect  # for other tables kept in the run's database (``tsam study``)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` ... ``COMMIT`` (rolled back on any error)."""
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    # ----------------------------------------------------------------- settings and methods
    def claim_settings(self, settings: dict[str, Any]) -> None:
        """Record the run's settings, or refuse if the run was started with different ones."""
        with self.transaction() as con:
            old = dict(con.execute("SELECT key, value FROM settings").fetchall())
            if old:
                new = {k: json.dumps(v, sort_keys=True) for k, v in settings.items()}
                diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
                if diff:
                    detail = "; ".join(f"{k}: run has {old.get(k)}, now {new.get(k)}" for k in diff)
                    raise ConfigConflict(f"{self.run_dir} holds a run made with other settings ({detail}); "
                                         "use the same options to continue it, or another --out")
                return
            con.executemany("INSERT INTO settings VALUES (?, ?)",
                            [(k, json.dumps(v, sort_keys=True)) for k, v in settings.items()])

    def claim_method(self, name: str, config: dict[str, Any]) -> None:
        """Record a method's configuration, or refuse a different one under the same name."""
        text = json.dumps(config, sort_keys=True)
        with self.transaction() as con:
            row = con.execute("SELECT config FROM methods WHERE name = ?", (name,)).fetchone()
            if row is None:
                con.execute("INSERT INTO methods VALUES (?, ?)", (name, text))
            elif row[0] != text:
                raise ConfigConflict(f"method {name!r} already ran in {self.run_dir} with another configuration:\n"
                                     f"  run has: {row[0]}\n  now:     {text}\n"
                                     "give this configuration another method name, or use another --out")

    def settings(self) -> dict[str, Any]:
        with self._connect() as con:
            return {k: json.loads(v) for k, v in con.execute("SELECT key, value FROM settings")}

    def methods(self) -> dict[str, dict[str, Any]]:
        with self._connect() as con:
            return {k: json.loads(v) for k, v in con.execute("SELECT name, config FROM methods ORDER BY rowid")}

    # ----------------------------------------------------------------- images
    def done_jobs(self) -> set[str]:
        """Ids of jobs whose row exists and whose image file is present."""
        with self._connect() as con:
            rows = con.execute("SELECT job_id, image FROM images").fetchall()
        return {job for job, image in rows if (self.run_dir / image).is_file()}

    def add_images(self, rows: list[dict[str, Any]]) -> None:
        """Insert (or replace) finished images, all in one transaction."""
        values = [tuple(json.dumps(r[c]) if c in JSON_COLUMNS else r[c] for c in IMAGE_COLUMNS) for r in rows]
        with self.transaction() as con:
            con.executemany(f"INSERT OR REPLACE INTO images ({', '.join(IMAGE_COLUMNS)}) "
                            f"VALUES ({', '.join('?' * len(IMAGE_COLUMNS))})", values)

    def images(self) -> list[dict[str, Any]]:
        """Every finished image as a dict (JSON columns decoded), in insertion order."""
        with self._connect() as con:
            con.row_factory = sqlite3.Row
            rows = con.execute("SELECT * FROM images ORDER BY rowid").fetchall()
        return [{k: (json.loads(r[k]) if k in JSON_COLUMNS and r[k] is not None else r[k]) for k in r.keys()} for r in rows]

    # ----------------------------------------------------------------- scores
    def add_scores(self, metric: str, values: dict[str, dict[str, float]]) -> None:
        """Store ``{job_id: {key: value}}`` of one metric, marking those jobs scored, in one transaction."""
        rows = [(job, metric, key, value) for job, vals in values.items() for key, value in vals.items()]
        with self.transaction() as con:
            con.executemany("INSERT OR REPLACE INTO scores VALUES (?, ?, ?, ?)", rows)
            con.executemany("INSERT OR REPLACE INTO scored VALUES (?, ?)", [(job, metric) for job in values])
        with self._connect() as con:  # read back: only what is stored counts as scored
            jobs = list(values)
            stored = sum(con.execute(f"SELECT COUNT(*) FROM scored WHERE metric = ? AND job_id IN "
                                     f"({', '.join('?' * len(part))})", (metric, *part)).fetchone()[0]
                         for part in (jobs[i : i + 500] for i in range(0, len(jobs), 500)))
        if stored != len(jobs):
            raise BenchError(f"{self.path}: {len(jobs) - stored} of {len(jobs)} {metric} scores were not stored "
                             "(is the database damaged?); nothing is reported as scored that is not stored")

    def scored(self) -> list[tuple[str, str]]:
        """Every ``(job_id, metric)`` a metric has seen, with or without values."""
        with self._connect() as con:
            return [tuple(r) for r in con.execute("SELECT job_id, metric FROM scored ORDER BY rowid")]

    def scored_jobs(self, metric: str) -> set[str]:
        with self._connect() as con:
            return {r[0] for r in con.execute("SELECT job_id FROM scored WHERE metric = ?", (metric,))}

    def scores(self) -> list[dict[str, Any]]:
        """Every score as ``{"job_id", "metric", "key", "value"}``."""
        with self._connect() as con:
            rows = con.execute("SELECT job_id, metric, key, value FROM scores ORDER BY rowid").fetchall()
        return [dict(zip(("job_id", "metric", "key", "value"), r)) for r in rows]


def _db_error(path: Path, e: sqlite3.Error) -> BenchError:
    """One line for a SQLite failure: a damaged file gets the way to recover, others their cause."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip() and not line.startswith("***")]
    e = type(e)(lines[0] + (f" (and {len(lines) - 1} more problems)" if len(lines) > 1 else "") if lines else type(e).__name__)
    if isinstance(e, sqlite3.OperationalError):  # cannot open, disk I/O, locked beyond the timeout
        return BenchError(f"cannot use the run database {path}: {e}; check that its folder is readable and "
                          "writable and that the disk is not full, then rerun the same command")
    return BenchError(f"{path} is damaged or not a run database ({e}); restore it from a copy, or move it away and "
                      "rerun the same `tsam bench run` command to rebuild it (its images are generated again)")


def _missing_columns(con: sqlite3.Connection) -> list[str]:
    """``table.column`` names of ``SCHEMA`` that the open database lacks (whole tables as ``table``)."""
    missing = []
    for table, columns in _SCHEMA_COLUMNS.items():
        have = {row[1] for row in con.execute(f"PRAGMA table_info({table})")}
        missing += [table] if not have else [f"{table}.{c}" for c in columns if c not in have]
    return missing


_SCHEMA_COLUMNS = {
    "settings": ("key", "value"), "methods": ("name", "config"), "images": IMAGE_COLUMNS,
    "scores": ("job_id", "metric", "key", "value"), "scored": ("job_id", "metric"),
}
