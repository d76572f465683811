"""``tsam bench score``: add metric values to a run's database, batched and resumable."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .db import BenchError, RunDB


def score_run(
    run_dir: str | Path,
    metric_names: list[str],
    *,
    device: str = "cpu",
    batch_size: int = 16,
    options: dict[str, dict[str, Any]] | None = None,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
    threads: str | int | None = None,
) -> dict[str, int]:
    """Score every image not yet scored by each metric; returns how many images each metric scored.

    All metrics are loaded before any work starts, so missing weights fail at once. Images are
    taken in database order and split between processes like generation (chunk ``k`` to process
    ``k % world_size``); each chunk's values are stored in one transaction. ``threads`` as in
    ``run_benchmark``.
    """
    from PIL import Image
    from tqdm.auto import tqdm

    from ..threads import Threads
    from .metrics import create_metric

    cpu_threads = Threads(threads)
    run_dir = Path(run_dir)
    db = RunDB(run_dir, create=False)
    rows = db.images()
    if not rows:
        raise BenchError(f"{run_dir} has no images to score yet; run `tsam bench run` first")
    metrics = {name: create_metric(name, device=device, **(options or {}).get(name, {})) for name in metric_names}
    counts = {}
    for name, metric in metrics.items():
        scored = db.scored_jobs(name)
        # chunks of ALL images, so that processes starting at different moments agree on the split
        chunks = [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
        mine = [[r for r in c if r["job_id"] not in scored] for k, c in enumerate(chunks) if k % world_size == rank]
        mine = [c for c in mine if c]
        counts[name] = 0
        with tqdm(total=sum(map(len, mine)), unit="img", desc=name, disable=not progress) as bar:
            for chunk in mine:
                cpu_threads.adapt()
                images = [Image.open(run_dir / r["image"]).convert("RGB") for r in chunk]
                values = metric.score(images, [r["prompt"] for r in chunk], [_meta(r) for r in chunk])
                db.add_scores(name, {r["job_id"]: v for r, v in zip(chunk, values)})
                counts[name] += len(chunk)
                bar.update(len(chunk))
    return counts


def _meta(row: dict[str, Any]) -> dict[str, Any]:
    """The prompt's metadata, with TIFA's own id where the prompt comes from TIFA (``tifa-v1:coco_1``)."""
    meta = dict(row["prompt_meta"] or {})
    if row["suite"] == "tifa-v1":
        meta.setdefault("tifa_id", row["prompt_id"].split(":", 1)[1])
    return meta
