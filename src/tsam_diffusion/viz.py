"""Pictures of a T-SAM run: side-by-side comparisons, ``T``/``S`` heatmaps and per-token attention maps.

Pure functions returning PIL images (``save_diagnostic_maps`` writes PNGs). matplotlib is imported
lazily and drawn through its Agg canvas (``matplotlib.figure.Figure`` + ``FigureCanvasAgg``), so no
display is needed and the global pyplot backend of the caller (e.g. a notebook) is left alone.
"""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .files import save_png

if TYPE_CHECKING:
    from .diagnostics import Diagnostics

_MAX_COLUMNS = 8  # token_maps panels per row
_ANNOTATE_MAX_N = 12  # matrix_heatmap writes the values in the cells up to this size


# --------------------------------------------------------------------------- PIL helpers


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """PIL's default font at ``size`` px (the fixed bitmap font on Pillow builds without FreeType)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow < 10.1 or no FreeType
        return ImageFont.load_default()


def _text_width(draw: ImageDraw.ImageDraw, text: str, font: Any) -> float:
    return draw.textlength(text, font=font)


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: Any, max_width: float) -> list[str]:
    """Greedy word wrap of ``text`` to ``max_width`` px; a word longer than a line is cut by characters."""
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}" if line else word
            if _text_width(draw, candidate, font) <= max_width:
                line = candidate
                continue
            if line:
                lines.append(line)
            line = ""
            for ch in word:  # a single word wider than the line: break it
                if line and _text_width(draw, line + ch, font) > max_width:
                    lines.append(line)
                    line = ""
                line += ch
        lines.append(line)
    return lines


def _line_height(font: Any) -> int:
    left, top, right, bottom = font.getbbox("Ag|")
    return int(math.ceil(bottom - min(top, 0))) + 2


def _draw_lines(draw: ImageDraw.ImageDraw, lines: list[str], font: Any, x0: int, width: int, y: int, fill: Any) -> int:
    """Draw ``lines`` centred in ``[x0, x0 + width)`` from ``y``; returns the y below them."""
    lh = _line_height(font)
    for line in lines:
        w = _text_width(draw, line, font)
        draw.text((x0 + (width - w) / 2, y), line, font=font, fill=fill)
        y += lh
    return y


def side_by_side(
    images: list[Image.Image],
    labels: list[str],
    title: str | None = None,
    footer: str | None = None,
    min_width: int = 256,
) -> Image.Image:
    """``images`` in one row, each under its label, with an optional title above and footer below.

    Images narrower than ``min_width`` are enlarged by a whole factor (nearest neighbour, so pixels stay
    exact) to leave room for legible labels, e.g. 128 px ``tiny-sd`` images are shown at 256 px. Text is
    sized from the narrowest image and wrapped to the width it has.
    """
    if not images:
        raise ValueError("side_by_side needs at least one image")
    if len(labels) != len(images):
        raise ValueError(f"got {len(images)} images but {len(labels)} labels")
    images = [im.convert("RGB") for im in images]
    factor = max(1, math.ceil(min_width / max(1, min(im.width for im in images))))
    if factor > 1:
        images = [im.resize((im.width * factor, im.height * factor), Image.Resampling.NEAREST) for im in images]
    min_w = min(im.width for im in images)
    size = max(10, min(28, round(min_w / 14)))
    font, title_font = _font(size), _font(round(size * 1.25))
    pad = max(4, size // 2)
    total_w = sum(im.width for im in images) + pad * (len(images) + 1)

    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_lines = [_wrap(probe, label, font, im.width) for im, label in zip(images, labels)]
    title_lines = _wrap(probe, title, title_font, total_w - 2 * pad) if title else []
    footer_lines = _wrap(probe, footer, font, total_w - 2 * pad) if footer else []
    lh, tlh = _line_height(font), _line_height(title_font)
    label_h = max(len(lines) for lines in label_lines) * lh
    title_h = len(title_lines) * tlh + pad if title_lines else 0
    footer_h = len(footer_lines) * lh + pad if footer_lines else 0
    img_h = max(im.height for im in images)
    total_h = pad + title_h + label_h + pad // 2 + img_h + pad + footer_h

    canvas = Image.new("RGB", (total_w, total_h), "white")
    draw = ImageDraw.Draw(canvas)
    y = pad
    if title_lines:
        y = _draw_lines(draw, title_lines, title_font, 0, total_w, y, "black") + pad
    x = pad
    for im, lines in zip(images, label_lines):
        _draw_lines(draw, lines, font, x, im.width, y + label_h - len(lines) * lh, "black")  # bottom-aligned
        canvas.paste(im, (x, y + label_h + pad // 2))
        x += im.width + pad
    if footer_lines:
        _draw_lines(draw, footer_lines, font, 0, total_w, y + label_h + pad // 2 + img_h + pad, (110, 110, 110))
    return canvas


# --------------------------------------------------------------------------- matplotlib helpers


def _to_numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float32).numpy()
    return np.asarray(x, dtype=np.float32)


def _new_figure(width_in: float, height_in: float) -> Any:
    """A matplotlib Figure drawn by the Agg canvas (no pyplot, no display)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _figure_to_image(fig: Any) -> Image.Image:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", pad_inches=0.1, facecolor="white")
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def matrix_heatmap(M: torch.Tensor | np.ndarray, tokens: list[str], title: str) -> Image.Image:
    """An ``n x n`` heatmap (e.g. ``T`` or ``S``) with the tokens on both axes and a colorbar.

    Row ``i`` is the query token, column ``j`` the key; when the upper triangle is all zero (causal
    ``T``/``S``) it is left blank, and up to 12 tokens the values are written in the cells.
    """
    m = _to_numpy(M)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"matrix_heatmap needs a square matrix, got shape {tuple(m.shape)}")
    n = m.shape[0]
    if len(tokens) != n:
        raise ValueError(f"matrix is {n}x{n} but {len(tokens)} tokens were given")
    upper = np.triu(np.ones((n, n), dtype=bool), k=1)
    causal = n > 1 and not np.any(m[upper])
    shown = np.ma.masked_array(m, mask=upper) if causal else m

    side = max(3.5, 0.45 * n + 2.0)
    fig = _new_figure(side + 1.0, side)
    ax = fig.add_subplot(1, 1, 1)
    finite = m[np.isfinite(m)]
    vmax = float(finite.max()) if finite.size else 1.0
    im = ax.imshow(shown, cmap="viridis", vmin=min(0.0, float(finite.min()) if finite.size else 0.0),
                   vmax=vmax if vmax > 0 else 1.0, interpolation="nearest")
    ax.set_xticks(range(n), tokens, rotation=60, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(n), tokens)
    ax.set_xlabel("key token j")
    ax.set_ylabel("query token i")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if n <= _ANNOTATE_MAX_N:
        threshold = 0.6 * (vmax if vmax > 0 else 1.0)
        for i in range(n):
            for j in range(n):
                if causal and j > i:
                    continue
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=7 if n > 8 else 8,
                        color="black" if m[i, j] > threshold else "white")
    return _figure_to_image(fig)


def token_maps(
    A: torch.Tensor,
    height: int,
    width: int,
    tokens: list[str],
    image: Image.Image | None = None,
    title: str | None = None,
) -> Image.Image:
    """``token_maps_figure`` drawn as a PIL image."""
    return _figure_to_image(token_maps_figure(A, height, width, tokens, image, title))


def token_maps_figure(
    A: torch.Tensor,
    height: int,
    width: int,
    tokens: list[str],
    image: Image.Image | None = None,
    title: str | None = None,
) -> Any:
    """One panel per token of its cross-attention map, ``A`` ``[height * width, n]`` (row-major queries),
    as a matplotlib figure.

    Each map is scaled to its own maximum. With ``image``, the image is the first panel and every map is
    upsampled (bilinear) over a faded copy of it. More than 8 panels wrap to several rows.
    """
    a = _to_numpy(A)
    if a.ndim != 2 or a.shape[0] != height * width:
        raise ValueError(f"A must be [height * width = {height * width}, n], got shape {tuple(a.shape)}")
    if a.shape[1] != len(tokens):
        raise ValueError(f"A has {a.shape[1]} token columns but {len(tokens)} tokens were given")
    maps = a.T.reshape(len(tokens), height, width)

    background = None
    if image is not None:
        image = image.convert("RGB")
        background = np.asarray(Image.blend(image, Image.new("RGB", image.size, "white"), 0.55))
    panels = len(tokens) + (image is not None)
    cols = max(1, min(panels, _MAX_COLUMNS))
    rows = max(1, math.ceil(panels / cols))
    panel_in = 1.9
    fig = _new_figure(cols * panel_in, rows * panel_in + (0.45 if title else 0.15))
    axes = [fig.add_subplot(rows, cols, k + 1) for k in range(rows * cols)]
    for ax in axes:
        ax.set_axis_off()

    k = 0
    if image is not None:
        axes[0].imshow(np.asarray(image))
        axes[0].set_title("image", fontsize=10)
        k = 1
    for token, m in zip(tokens, maps):
        ax = axes[k]
        vmax = float(m.max()) if np.isfinite(m).all() and m.max() > 0 else 1.0
        if background is not None:
            up = torch.nn.functional.interpolate(torch.from_numpy(np.ascontiguousarray(m))[None, None],
                                                 size=(image.height, image.width), mode="bilinear",
                                                 align_corners=False)[0, 0].numpy()
            ax.imshow(background)
            ax.imshow(up, cmap="jet", alpha=0.5, vmin=0.0, vmax=vmax)
        else:
            ax.imshow(m, cmap="viridis", vmin=0.0, vmax=vmax, interpolation="nearest")
        ax.set_title(token, fontsize=10)
        k += 1
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


# --------------------------------------------------------------------------- diagnostics


def save_diagnostic_maps(
    diagnostics: "Diagnostics",
    image_index: int,
    out_dir: Path,
    stem: str,
    image: Image.Image | None = None,
) -> list[Path]:
    """Write ``T``, ``S`` (first/last update) and the token maps (first/last update) of one image as PNGs.

    Files: ``{stem}_T.png``, ``{stem}_S_first.png``, ``{stem}_S_last.png``, ``{stem}_maps_first.png``,
    ``{stem}_maps_last.png``. Without updates (guidance off or a no-op) only ``T`` is written, and
    nothing when the run had no guidance (``method=None``, or ``alpha=0``). Methods other than T-SAM
    compute no ``T`` or ``S``: only their token maps are written. Returns the paths written.
    """
    d = diagnostics
    if not 0 <= image_index < len(d.prompt_index):
        raise IndexError(f"image_index {image_index} out of range for {len(d.prompt_index)} images")
    out_dir = Path(out_dir)
    p = d.prompt_index[image_index]
    if p >= len(d.tokens):
        return []  # no tokens: sampling ran without guidance
    has_T = p < len(d.T)
    tokens = list(d.tokens[p])
    n = len(tokens)
    if n == 0:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def save(img: Image.Image, suffix: str) -> None:
        written.append(save_png(img, out_dir / f"{stem}_{suffix}.png"))

    gamma = (d.config or {}).get("gamma")
    t_title = "T: text self-attention" + (f" (^gamma={gamma:g})" if gamma is not None else "")
    if has_T:
        save(matrix_heatmap(d.T[p][:n, :n], tokens, t_title), "T")
    if not d.updates:
        return written

    for which, label in ((0, "first"), (-1, "last")) if has_T else ():
        u = d.updates[which]
        where = f"step {u.step}" + (f", iteration {u.iteration}" if u.iteration else "")
        loss = float(u.loss[image_index])
        save(matrix_heatmap(d.S_of(image_index, which), tokens, f"S at the {label} update ({where}), loss {loss:.3f}"),
             f"S_{label}")
    h, w = d.map_size if d.map_size is not None else (math.isqrt(d.A_first.shape[1]),) * 2
    for A, label in ((d.A_first, "first"), (d.A_last, "last")):
        if A is None:
            continue
        save(token_maps(A[image_index, :, :n], h, w, tokens, image=image,
                        title=f"image-to-text attention maps ({h}x{w}) at the {label} update"), f"maps_{label}")
    return written
