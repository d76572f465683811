"""``tsam study results``: win / lose / tie per comparison, as the paper's Tables D and E.

Per comparison ``A vs B``: the share of answers preferring ``A`` (win), ``B`` (lose) or neither (tie),
each with a 95% percentile-bootstrap interval that resamples participants and prompts together
(each answer weighted by how often its participant and its prompt were drawn), the number of
participants and answers, and agreement between participants on the items several answered: the
share of agreeing answer pairs and Fleiss' kappa (for a varying number of raters per item).

Participants who fail an attention check (prefer the image of another prompt) are flagged: the
main table leaves them out, a second one keeps everyone, and both say how many there were.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from .store import StudyStore

OUTCOMES = ("a", "b", "tie")  # win, lose, tie from A's side


def flagged_participants(items: dict[int, dict[str, Any]], answers: list[dict[str, Any]]) -> dict[str, int]:
    """``{pid: failed checks}`` for participants who preferred another prompt's image at least once."""
    failed: dict[str, int] = {}
    for a in answers:
        if items[a["item_id"]]["kind"] == "check" and a["winner"] != "a":
            failed[a["pid"]] = failed.get(a["pid"], 0) + 1
    return failed


def shares_ci(outcome: np.ndarray, participant: np.ndarray, prompt: np.ndarray, *, n: int = 2000,
              seed: int = 0) -> list[tuple[float, float, float]]:
    """``(share, lo, hi)`` of each of ``OUTCOMES`` (``outcome`` holds indices into it), two-way cluster bootstrap."""
    k = len(outcome)
    if not k:
        return [(math.nan, math.nan, math.nan)] * len(OUTCOMES)
    onehot = np.eye(len(OUTCOMES))[outcome]  # [k, 3]
    shares = onehot.mean(0)
    _, pi = np.unique(participant, return_inverse=True)
    _, qi = np.unique(prompt, return_inverse=True)
    if pi.max() < 1 and qi.max() < 1:
        return [(float(s), math.nan, math.nan) for s in shares]
    rng = np.random.default_rng(seed)
    wp = rng.multinomial(pi.max() + 1, np.full(pi.max() + 1, 1.0 / (pi.max() + 1)), size=n)  # [n, participants]
    wq = rng.multinomial(qi.max() + 1, np.full(qi.max() + 1, 1.0 / (qi.max() + 1)), size=n)
    w = wp[:, pi] * wq[:, qi]  # [n, k]
    total = w.sum(1, keepdims=True)
    ok = total[:, 0] > 0
    boot = (w[ok] @ onehot) / total[ok]  # [n', 3]
    lo, hi = np.quantile(boot, [0.025, 0.975], axis=0)
    return [(float(s), float(a), float(b)) for s, a, b in zip(shares, lo, hi)]


def agreement(by_item: dict[int, list[int]]) -> tuple[float, float, int]:
    """``(share of agreeing answer pairs, Fleiss' kappa, items with two or more answers)``."""
    counts = np.array([np.bincount(v, minlength=len(OUTCOMES)) for v in by_item.values() if len(v) >= 2], dtype=float)
    if not len(counts):
        return (math.nan, math.nan, 0)
    n_i = counts.sum(1)
    p_i = (counts * (counts - 1)).sum(1) / (n_i * (n_i - 1))
    p_bar = float(p_i.mean())
    p_k = counts.sum(0) / counts.sum()
    p_e = float((p_k**2).sum())
    kappa = (p_bar - p_e) / (1 - p_e) if p_e < 1 else math.nan
    return (p_bar, kappa, len(counts))


def study_results(store: StudyStore, *, bootstrap: int = 2000) -> dict[str, Any]:
    items = {it["item_id"]: it for it in store.items()}
    answers = store.answers()
    flagged = flagged_participants(items, answers)
    out: dict[str, Any] = {"participants": len({a["pid"] for a in answers}), "answers": len(answers),
                           "flagged": flagged, "tables": {}}
    for name, keep in (("excluding flagged", lambda a: a["pid"] not in flagged), ("everyone", lambda a: True)):
        rows = []
        for comparison in dict.fromkeys(it["comparison"] for it in items.values()):
            sel = [a for a in answers if keep(a) and items[a["item_id"]]["comparison"] == comparison
                   and items[a["item_id"]]["kind"] == "pair"]
            outcome = np.array([OUTCOMES.index(a["winner"]) for a in sel], dtype=int)
            shares = shares_ci(outcome, np.array([a["pid"] for a in sel]),
                               np.array([items[a["item_id"]]["prompt_id"] for a in sel]), n=bootstrap)
            by_item: dict[int, list[int]] = {}
            for a, o in zip(sel, outcome):
                by_item.setdefault(a["item_id"], []).append(int(o))
            agree, kappa, shared = agreement(by_item)
            rows.append({"comparison": comparison, "win": shares[0], "lose": shares[1], "tie": shares[2],
                         "participants": len({a["pid"] for a in sel}), "answers": len(sel), "agreement": agree,
                         "kappa": kappa, "items_shared": shared})
        out["tables"][name] = rows
    return out


def _pct(x: tuple[float, float, float]) -> str:
    if math.isnan(x[0]):
        return "-"
    if math.isnan(x[1]):
        return f"{100 * x[0]:.1f}%"
    return f"{100 * x[0]:.1f}% [{100 * x[1]:.1f}, {100 * x[2]:.1f}]"


def table_rows(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """``(header, cells)`` of one table, as text (Markdown and the HTML report share it)."""
    header = ["comparison", "win", "lose", "tie", "participants", "answers", "agreement", "Fleiss' kappa"]
    body = []
    for r in rows:
        agree = "-" if math.isnan(r["agreement"]) else f"{r['agreement']:.2f} ({r['items_shared']} items)"
        kappa = "-" if math.isnan(r["kappa"]) else f"{r['kappa']:.2f}"
        body.append([r["comparison"], _pct(r["win"]), _pct(r["lose"]), _pct(r["tie"]), str(r["participants"]),
                     str(r["answers"]), agree, kappa])
    return header, body


def markdown(results: dict[str, Any]) -> str:
    """The tables as Markdown (for the terminal and ``tsam bench report``)."""
    lines = [f"{results['participants']} participants, {results['answers']} answers; "
             f"{len(results['flagged'])} flagged by an attention check"]
    for name, rows in results["tables"].items():
        header, body = table_rows(rows)
        lines += ["", f"**{name}** (win / lose / tie from the first method's side, 95% intervals resampling "
                      "participants and prompts)", "", "| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines)
