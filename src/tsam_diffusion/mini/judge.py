"""ShapesJudge: an exact, rule-based judge for ShapesWorld images (no neural network).

Detection, per pixel then per component:

1. Colour. Each pixel ``p`` is explained as ``BACKGROUND + alpha * (colour - BACKGROUND)`` for the
   palette colour whose direction fits best (smallest residual; brightness-invariant, so blur,
   anti-aliasing and dim colours keep their colour). It is foreground when ``alpha >= 0.5`` and the
   residual is under ``max_sin`` (0.5, i.e. within 30 degrees) of ``|p - BACKGROUND|``.
2. Components. 8-connected components per colour. Components under ``min_area`` px (6) are merged
   into the largest component they touch (colour noise inside a blurry object), or else dropped.
3. Shape. Nearest prototype (``PROTOTYPES``) on five bounding-box features: fill ratio, mean row
   width of the top and bottom 30% of rows, mean column height of the left and right 30% of
   columns (all relative to the box, after trimming one-pixel rows/columns at its edges). Square
   ~(1, 1, 1, 1, 1), circle ~(.8, .7, .7, .7, .7), cross ~(.5, .3, .3, .3, .3), triangle
   ~(.7, .3, 1, .5, .5): bottom vs top tells the triangle from the others.

``judge(image, spec or prompt)`` matches named objects one-to-one to detections (best assignment by
brute force: a match needs the shape, and a matching colour counts extra), and reports ``present``,
``bound``, ``extra``, ``whole`` (all present and bound) and ``exact`` (whole, no extra objects).
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .world import BACKGROUND, COLORS, PALETTE, SHAPES, TEMPLATES, Scene, caption

SpecLike = Sequence[tuple[str, "str | None"]]

# mean features of ground-truth renders (sizes 8-14, on the pixel grid), rounded
PROTOTYPES: dict[str, tuple[float, ...]] = {
    "circle": (0.81, 0.67, 0.67, 0.67, 0.67),
    "square": (1.00, 1.00, 1.00, 1.00, 1.00),
    "triangle": (0.68, 0.34, 0.99, 0.50, 0.50),
    "cross": (0.54, 0.32, 0.32, 0.32, 0.32),
}


@dataclass(frozen=True)
class Detection:
    shape: str
    color: str
    bbox: tuple[int, int, int, int]  # x0, y0, x1, y1 (pixels, end-exclusive)
    area: int


@dataclass(frozen=True)
class Verdict:
    spec: tuple[tuple[str, str | None], ...]
    detections: tuple[Detection, ...]
    assignment: tuple[int | None, ...]  # detection index per named object
    present: tuple[bool, ...]
    bound: tuple[bool | None, ...]  # None where no colour is named
    extra: int
    whole: bool
    exact: bool


# --------------------------------------------------------------------------- pixels


def _as_array(image) -> np.ndarray:
    """[H, W, 3] float32 in 0-255 from uint8 (or a PIL image), or from floats in [0, 1]."""
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[2] < 3:
        raise ValueError(f"expected an [H, W, 3] image, got shape {a.shape}")
    scale = 255.0 if a.dtype.kind == "f" and a.max() <= 1.0 else 1.0
    return a[..., :3].astype(np.float32) * scale


def pixel_labels(image, alpha_min: float = 0.5, max_sin: float = 0.5) -> np.ndarray:
    """Palette index per pixel (int [H, W]; -1 = background or no palette colour)."""
    x = _as_array(image) - np.asarray(BACKGROUND, np.float32)
    d = np.asarray([PALETTE[c] for c in COLORS], np.float32) - np.asarray(BACKGROUND, np.float32)
    alpha = np.clip(x @ d.T / (d * d).sum(1), 0, None)  # [H, W, K]
    resid = np.linalg.norm(x[..., None, :] - alpha[..., None] * d, axis=-1)
    k = resid.argmin(-1)
    a = np.take_along_axis(alpha, k[..., None], -1)[..., 0]
    r = np.take_along_axis(resid, k[..., None], -1)[..., 0]
    ok = (a >= alpha_min) & (r <= max_sin * np.linalg.norm(x, axis=-1))
    return np.where(ok, k, -1)


def connected_components(labels: np.ndarray) -> np.ndarray:
    """8-connected components of equal non-negative labels (int [H, W]; -1 = none).

    Each pixel holds the index of a pixel of its component; neighbours of equal label take the
    maximum, then pointers jump (``v = v[v]``) until nothing changes. Returns one id per component.
    """
    h, w = labels.shape
    lab = np.pad(labels, 1, constant_values=-1)
    fg = lab >= 0
    v = np.where(fg, np.arange(lab.size).reshape(lab.shape), -1)
    shifts = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]
    same = {
        (dy, dx): fg[1:-1, 1:-1] & (lab[1 + dy : h + 1 + dy, 1 + dx : w + 1 + dx] == lab[1:-1, 1:-1])
        for dy, dx in shifts
    }
    while True:
        new = v[1:-1, 1:-1].copy()
        for (dy, dx), ok in same.items():
            np.maximum(new, np.where(ok, v[1 + dy : h + 1 + dy, 1 + dx : w + 1 + dx], -1), out=new)
        out = v.copy()
        out[1:-1, 1:-1] = new
        flat = out.ravel()
        for _ in range(2):
            flat = np.where(flat >= 0, np.maximum(flat, flat[flat]), -1)
        out = flat.reshape(v.shape)
        if np.array_equal(out, v):
            return v[1:-1, 1:-1]
        v = out


# --------------------------------------------------------------------------- shapes


def shape_features(mask: np.ndarray) -> np.ndarray:
    """(fill, top, bottom, left, right) of a component mask (see module doc)."""
    ys, xs = np.nonzero(mask)
    m = mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].astype(np.float32)
    for _ in range(2):  # trim one-pixel nubs (rasterised circle extremes, triangle apex)
        if m.shape[0] > 4 and m[0].sum() <= 1:
            m = m[1:]
        if m.shape[0] > 4 and m[-1].sum() <= 1:
            m = m[:-1]
        if m.shape[1] > 4 and m[:, 0].sum() <= 1:
            m = m[:, 1:]
        if m.shape[1] > 4 and m[:, -1].sum() <= 1:
            m = m[:, :-1]
    h, w = m.shape
    bh, bw = max(1, round(0.3 * h)), max(1, round(0.3 * w))
    rows, cols = m.mean(1), m.mean(0)
    return np.asarray(
        [m.mean(), rows[:bh].mean(), rows[-bh:].mean(), cols[:bw].mean(), cols[-bw:].mean()]
    )


def classify_shape(mask: np.ndarray) -> str:
    f = shape_features(mask)
    return min(PROTOTYPES, key=lambda s: float(np.sum((f - np.asarray(PROTOTYPES[s])) ** 2)))


def detect(image, min_area: int = 6, alpha_min: float = 0.5, max_sin: float = 0.5) -> list[Detection]:
    """Objects in ``image`` ([H, W, 3] uint8, or float in [0, 1]), largest first."""
    labels = pixel_labels(image, alpha_min, max_sin)
    comp = connected_components(labels)
    ids, areas = np.unique(comp[comp >= 0], return_counts=True)
    big = {int(i) for i, a in zip(ids, areas) if a >= min_area}
    owner = comp.copy()
    for i in (int(i) for i, a in zip(ids, areas) if a < min_area):  # merge or drop small bits
        m = comp == i
        ring = np.zeros_like(m)
        for dy, dx in itertools.product((-1, 0, 1), repeat=2):
            ring |= np.roll(np.pad(m, 1), (dy, dx), (0, 1))[1:-1, 1:-1]
        touch, n = np.unique(comp[ring & ~m], return_counts=True)
        cand = [(c, int(t)) for t, c in zip(touch, n) if int(t) in big]
        owner[m] = max(cand)[1] if cand else -1
    dets = []
    for i in big:
        m = owner == i
        ys, xs = np.nonzero(m)
        color = COLORS[int(labels[comp == i][0])]
        bbox = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        dets.append(Detection(classify_shape(m), color, bbox, int(m.sum())))
    return sorted(dets, key=lambda d: (-d.area, d.bbox))


# --------------------------------------------------------------------------- prompts

_SPLIT = re.compile(r"\s*,\s*(?:and\s+)?|\s+and\s+|\s+with\s+")


def parse_prompt(text: str) -> tuple[tuple[str, str | None], ...]:
    """Invert the caption templates: 'a red circle and a square' -> (('circle', 'red'), ('square', None)).

    Lenient about structure: any list of 'a/an [colour] shape' phrases joined by ', ', 'and' or
    'with' parses (case and a final full stop are ignored); anything else raises ValueError.
    ``infer_template`` is the strict inverse."""
    t = text.strip().lower().rstrip(".").strip()
    spec = []
    for part in _SPLIT.split(t) if t else []:
        words = part.split()
        if len(words) not in (2, 3) or words[0] not in ("a", "an") or words[-1] not in SHAPES:
            raise ValueError(f"cannot parse {part!r} in prompt {text!r}")
        if len(words) == 3 and words[1] not in COLORS:
            raise ValueError(f"unknown colour {words[1]!r} in prompt {text!r}")
        spec.append((words[-1], words[1] if len(words) == 3 else None))
    if not spec:
        raise ValueError(f"empty prompt {text!r}")
    return tuple(spec)


def infer_template(text: str) -> str:
    """The template whose caption is exactly ``text`` (up to case and a final full stop)."""
    spec = parse_prompt(text)
    t = text.strip().lower().rstrip(".").strip()
    for name in TEMPLATES:
        try:
            if caption(spec, name) == t:
                return name
        except ValueError:
            continue
    raise ValueError(f"prompt {text!r} fits no template")


def _spec(spec: SpecLike | Scene | str) -> tuple[tuple[str, str | None], ...]:
    if isinstance(spec, str):
        return parse_prompt(spec)
    if isinstance(spec, Scene):
        return spec.spec
    return tuple((s, c) for s, c in spec)


# --------------------------------------------------------------------------- verdicts


def _best_assignment(spec, dets, pair_score) -> tuple[int | None, ...]:
    """Injective assignment of spec items to detections (or None) maximising the summed score."""
    options = [
        [None] + [j for j, d in enumerate(dets) if pair_score(item, d) is not None] for item in spec
    ]
    best, best_score = tuple(None for _ in spec), -1.0
    for combo in itertools.product(*options):
        used = [j for j in combo if j is not None]
        if len(used) != len(set(used)):
            continue
        score = sum(pair_score(it, dets[j]) for it, j in zip(spec, combo) if j is not None)
        if score > best_score:
            best, best_score = combo, score
    return best


def _judge_score(item, d: Detection) -> float | None:
    shape, color = item
    if d.shape != shape:
        return None
    return 1.0 + (color is not None and d.color == color)


def judge(
    image,
    spec: SpecLike | Scene | str,
    detections: Sequence[Detection] | None = None,
    **detect_kw,
) -> Verdict:
    """Judge ``image`` against a spec, a scene (all colours named) or a prompt text; pass
    ``detections`` (from ``detect(image)``) to judge one image against several specs cheaply."""
    sp = _spec(spec)
    dets = list(detections) if detections is not None else detect(image, **detect_kw)
    assign = _best_assignment(sp, dets, _judge_score)
    present = tuple(j is not None for j in assign)
    bound = tuple(
        None if c is None else (j is not None and dets[j].color == c) for (_, c), j in zip(sp, assign)
    )
    extra = len(dets) - sum(present)
    whole = all(present) and all(b is not False for b in bound)
    return Verdict(sp, tuple(dets), assign, present, bound, extra, whole, whole and extra == 0)


@dataclass(frozen=True)
class Confusion:
    """Rows: true class; columns: detected class, then 'missing' (no matched detection)."""

    shapes: np.ndarray  # [len(SHAPES), len(SHAPES) + 1]
    colors: np.ndarray  # [len(COLORS), len(COLORS) + 1]; named colours only
    shape_labels: tuple[str, ...] = SHAPES
    color_labels: tuple[str, ...] = COLORS


def _confusion_score(item, d: Detection) -> float:
    shape, color = item
    return 2.0 * (d.shape == shape) + (color is not None and d.color == color) + 0.1


def confusion(images: Sequence, specs: Sequence[SpecLike | Scene | str], **detect_kw) -> Confusion:
    """Shape and colour confusion matrices over named objects, each matched to at most one
    detection (any detection may match; agreement in shape, then colour, is preferred)."""
    cs = np.zeros((len(SHAPES), len(SHAPES) + 1), np.int64)
    cc = np.zeros((len(COLORS), len(COLORS) + 1), np.int64)
    for image, spec in zip(images, specs):
        sp, dets = _spec(spec), detect(image, **detect_kw)
        for (shape, color), j in zip(sp, _best_assignment(sp, dets, _confusion_score)):
            d = dets[j] if j is not None else None
            cs[SHAPES.index(shape), SHAPES.index(d.shape) if d else len(SHAPES)] += 1
            if color is not None:
                cc[COLORS.index(color), COLORS.index(d.color) if d else len(COLORS)] += 1
    return Confusion(cs, cc)
