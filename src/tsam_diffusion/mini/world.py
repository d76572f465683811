"""ShapesWorld: coloured shapes on a dark background, template captions, train/test sampling.

Palette (RGB, fixed; chosen so that the directions ``colour - BACKGROUND`` are far apart, which is
what the judge classifies; the closest pair, orange/yellow, is about 19 degrees apart):

    red (230, 30, 30)   orange (255, 130, 0)   yellow (240, 230, 20)   green (30, 190, 50)
    blue (40, 80, 240)  purple (150, 50, 210)  white (240, 240, 240)   background (20, 20, 20)

Shapes (all fit an axis-aligned ``size x size`` box centred on ``(cx, cy)``, pixel units):
circle (diameter ``size``), square (side ``size``), triangle (pointing up, base and height
``size``), cross (a plus sign, arm thickness ``size - 2 * round(size / 3)``: 2-5 px, about a third
of the size, with the same parity as ``size`` so that the arms are pixel-crisp). All four shapes
and all seven colours are told apart by the judge at 32 px (see ``tests/test_mini_world.py``);
none was dropped. Rendering is anti-aliased: 4x4 supersampling, box-filter downsampling, alpha
compositing (circle and triangle edges are soft; squares and crosses are crisp).

Scenes hold 1-3 objects of distinct shapes, with integer sizes 8-14 px (``SIZE_RANGE``) and
bounding boxes on the pixel grid (sampled scenes; any float ``Obj`` renders). Snapping matters at
this resolution: an off-grid 8 px square loses its corner pixels and looks like a circle. Bounding
boxes are at least ``GAP`` = 2 px apart and 1 px inside the image, so objects never touch and the
judge can separate them. If a layout cannot be found, the maximum size shrinks by one pixel.

Captions (``TEMPLATES``): "one" "a red circle"; "two-attr" "a red circle and a blue square";
"two-plain" "a circle and a square"; "with" "a circle with a blue square"; "attr-plain"
"a blue square and a circle"; "three-attr" "a red circle, a blue square and a green cross".
The article is "an" before a vowel ("an orange circle"), "a" otherwise. A spec is a tuple of
``(shape, colour or None)``; its shapes are distinct, and so are its named colours. Unnamed
colours are drawn at random when rendering.

Held-out pairs (``HOLDOUT_PAIRS``, (colour, shape)): red triangle, blue cross, yellow circle.
With ``split="train"`` they never occur in a scene of two or more objects, named or unnamed (they do
occur alone, in the "one" template), so a model trained on the train split has seen each such
pairing only by itself. ``split="test"`` draws from the full distribution; ``split="holdout"``
draws multi-object examples that contain at least one held-out pair (named in the caption).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "orange": (255, 130, 0),
    "yellow": (240, 230, 20),
    "green": (30, 190, 50),
    "blue": (40, 80, 240),
    "purple": (150, 50, 210),
    "white": (240, 240, 240),
}
COLORS: tuple[str, ...] = tuple(PALETTE)
BACKGROUND: tuple[int, int, int] = (20, 20, 20)
WIDTH = 32
SIZE_RANGE: tuple[int, int] = (8, 14)
GAP = 2.0
MARGIN = 1
SUPERSAMPLE = 4

HOLDOUT_PAIRS: frozenset[tuple[str, str]] = frozenset(
    {("red", "triangle"), ("blue", "cross"), ("yellow", "circle")}
)

Spec = tuple[tuple[str, "str | None"], ...]


@dataclass(frozen=True)
class Obj:
    """One shape; ``cx, cy`` its centre and ``size`` its bounding-box side, in pixels."""

    shape: str
    color: str
    cx: float
    cy: float
    size: float

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """``(x0, y0, x1, y1)`` in continuous pixel coordinates."""
        h = self.size / 2
        return (self.cx - h, self.cy - h, self.cx + h, self.cy + h)


@dataclass(frozen=True)
class Scene:
    objects: tuple[Obj, ...]
    width: int = WIDTH

    @property
    def spec(self) -> Spec:
        """The fully coloured spec of this scene."""
        return tuple((o.shape, o.color) for o in self.objects)


# --------------------------------------------------------------------------- rendering


def cross_thickness(size: float) -> float:
    """Arm thickness of a cross: about a third of ``size``, same parity, so crisp on the grid."""
    return float(size - 2 * round(size / 3))


def _inside(obj: Obj, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Boolean mask: which points (x, y) lie inside ``obj``."""
    dx, dy, h = x - obj.cx, y - obj.cy, obj.size / 2
    if obj.shape == "circle":
        return dx * dx + dy * dy <= h * h
    if obj.shape == "square":
        return (np.abs(dx) <= h) & (np.abs(dy) <= h)
    if obj.shape == "triangle":  # apex at top; half-width grows from 0 to h over the height
        return (dy <= h) & (np.abs(dx) <= (dy + h) / 2)
    if obj.shape == "cross":
        t = cross_thickness(obj.size) / 2
        return ((np.abs(dx) <= t) & (np.abs(dy) <= h)) | ((np.abs(dy) <= t) & (np.abs(dx) <= h))
    raise ValueError(f"unknown shape {obj.shape!r}")


def coverage(obj: Obj, width: int = WIDTH, ss: int = SUPERSAMPLE) -> np.ndarray:
    """Fraction of each pixel covered by ``obj`` (float32 [W, W]), by ``ss x ss`` supersampling
    inside the object's bounding box."""
    x0, y0, x1, y1 = obj.bbox
    cov = np.zeros((width, width), np.float32)
    c0, r0 = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
    c1, r1 = min(width, int(np.ceil(x1))), min(width, int(np.ceil(y1)))
    if c1 <= c0 or r1 <= r0:
        return cov
    ys = r0 + (np.arange((r1 - r0) * ss) + 0.5) / ss
    xs = c0 + (np.arange((c1 - c0) * ss) + 0.5) / ss
    m = _inside(obj, xs[None, :], ys[:, None]).astype(np.float32)
    cov[r0:r1, c0:c1] = m.reshape(r1 - r0, ss, c1 - c0, ss).mean(axis=(1, 3))
    return cov


def render(scene: Scene) -> np.ndarray:
    """Render ``scene`` to uint8 [W, W, 3] (anti-aliased, alpha-composited in order)."""
    w = scene.width
    img = np.empty((w, w, 3), np.float32)
    img[:] = BACKGROUND
    for obj in scene.objects:
        a = coverage(obj, w)[..., None]
        img = img * (1 - a) + np.asarray(PALETTE[obj.color], np.float32) * a
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- layout


def _separated(a: tuple[float, float, float], b: tuple[float, float, float], gap: float) -> bool:
    (ax, ay, asz), (bx, by, bsz) = a, b
    lim = (asz + bsz) / 2 + gap
    return abs(ax - bx) >= lim or abs(ay - by) >= lim


def sample_layout(
    rng: np.random.Generator,
    n: int,
    width: int = WIDTH,
    size_range: tuple[int, int] = SIZE_RANGE,
    gap: float = GAP,
    tries: int = 50,
) -> list[tuple[float, float, float]]:
    """``n`` boxes ``(cx, cy, size)`` with integer sizes in ``size_range`` and corners on the pixel
    grid, inside the image, whose bounding boxes are at least ``gap`` px apart."""
    lo, hi = int(size_range[0]), int(size_range[1])
    while hi >= lo:
        for _ in range(tries):
            boxes: list[tuple[float, float, float]] = []
            for _ in range(n):
                for _ in range(tries):
                    s = int(rng.integers(lo, hi + 1))
                    x0, y0 = rng.integers(MARGIN, width - s - MARGIN + 1, size=2)
                    box = (x0 + s / 2, y0 + s / 2, float(s))
                    if all(_separated(box, b, gap) for b in boxes):
                        boxes.append(box)
                        break
                else:
                    break
            if len(boxes) == n:
                return boxes
        hi -= 1
    raise RuntimeError(f"cannot place {n} objects of size >= {lo} in {width} px")


def _random_color(rng: np.random.Generator, shape: str, forbidden: set[tuple[str, str]]) -> str:
    allowed = [c for c in COLORS if (c, shape) not in forbidden]
    return allowed[int(rng.integers(len(allowed)))]


def sample_scene(
    rng: np.random.Generator,
    n_objects: int | None = None,
    spec: Sequence[tuple[str, str | None]] | None = None,
    width: int = WIDTH,
    size_range: tuple[int, int] = SIZE_RANGE,
    forbidden: set[tuple[str, str]] | frozenset[tuple[str, str]] = frozenset(),
) -> Scene:
    """A random scene: for ``spec`` (unnamed colours random, avoiding ``forbidden`` (colour, shape)
    pairs), or else ``n_objects`` (default 1-3) distinct random shapes in random colours."""
    if spec is None:
        n = int(rng.integers(1, 4)) if n_objects is None else n_objects
        shapes = rng.choice(len(SHAPES), size=n, replace=False)
        spec = [(SHAPES[int(i)], None) for i in shapes]
    boxes = sample_layout(rng, len(spec), width, size_range)
    objs = []
    for (shape, color), (cx, cy, s) in zip(spec, boxes):
        col = color if color is not None else _random_color(rng, shape, set(forbidden))
        objs.append(Obj(shape, col, cx, cy, s))
    return Scene(tuple(objs), width)


# --------------------------------------------------------------------------- captions

# template -> which of its objects name a colour (the number of objects is the length)
TEMPLATES: dict[str, tuple[bool, ...]] = {
    "one": (True,),
    "two-attr": (True, True),
    "two-plain": (False, False),
    "with": (False, True),
    "attr-plain": (True, False),
    "three-attr": (True, True, True),
}
TRAIN_MIX: dict[str, float] = {
    "one": 0.2,
    "two-attr": 0.25,
    "two-plain": 0.1,
    "with": 0.1,
    "attr-plain": 0.1,
    "three-attr": 0.25,
}


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def phrase(shape: str, color: str | None) -> str:
    """'a red circle', 'an orange square', 'a circle'."""
    words = f"{color} {shape}" if color else shape
    return f"{article(words)} {words}"


def caption(spec: Scene | Sequence[tuple[str, str | None]], template: str) -> str:
    """The caption of ``spec`` (or of a scene, naming colours as the template says) in ``template``."""
    named = TEMPLATES[template]
    if isinstance(spec, Scene):
        if len(spec.objects) != len(named):
            raise ValueError(f"a scene of {len(spec.objects)} objects does not fit template {template!r}")
        spec = [(o.shape, o.color if k else None) for o, k in zip(spec.objects, named)]
    if len(spec) != len(named) or any((c is not None) != k for (_, c), k in zip(spec, named)):
        raise ValueError(f"spec {spec!r} does not fit template {template!r}")
    p = [phrase(s, c) for s, c in spec]
    if template == "one":
        return p[0]
    if template == "with":
        return f"{p[0]} with {p[1]}"
    if template == "three-attr":
        return f"{p[0]}, {p[1]} and {p[2]}"
    return f"{p[0]} and {p[1]}"


# --------------------------------------------------------------------------- sampling


def sample_spec(rng: np.random.Generator, template: str, split: str = "train") -> Spec:
    """A random spec for ``template``: distinct shapes, distinct named colours (see module doc)."""
    named = TEMPLATES[template]
    n = len(named)
    if split not in ("train", "test", "holdout"):
        raise ValueError(f"unknown split {split!r}")
    if split == "holdout" and n < 2:
        raise ValueError("the holdout split has multi-object templates only")
    for _ in range(1000):
        shapes = [SHAPES[int(i)] for i in rng.choice(len(SHAPES), size=n, replace=False)]
        cols = [COLORS[int(i)] for i in rng.choice(len(COLORS), size=n, replace=False)]
        spec = tuple((s, c if k else None) for s, c, k in zip(shapes, cols, named))
        held = [(c, s) in HOLDOUT_PAIRS for s, c in spec]
        if split == "train" and n > 1 and any(held):
            continue
        if split == "holdout" and not any(held):
            continue
        return spec
    raise RuntimeError(f"no spec for {template!r} in split {split!r}")


def sample_example(
    rng: np.random.Generator,
    template: str,
    split: str = "train",
    width: int = WIDTH,
) -> tuple[Scene, str, Spec]:
    """``(scene, caption, spec)`` for ``template``; in the train split multi-object scenes contain
    no held-out (colour, shape) pair, not even in an unnamed colour."""
    spec = sample_spec(rng, template, split)
    forbidden = HOLDOUT_PAIRS if (split == "train" and len(spec) > 1) else frozenset()
    scene = sample_scene(rng, spec=spec, width=width, forbidden=forbidden)
    return scene, caption(spec, template), spec


def sample_template(rng: np.random.Generator, mix: dict[str, float] = TRAIN_MIX) -> str:
    names = list(mix)
    p = np.asarray([mix[k] for k in names], np.float64)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def sample_training_example(rng: np.random.Generator, width: int = WIDTH) -> tuple[Scene, str, Spec]:
    """A train-split example with its template drawn from ``TRAIN_MIX``."""
    return sample_example(rng, sample_template(rng), "train", width)
