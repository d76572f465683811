"""``tsam mini train``: train tsam-mini on ShapesWorld; seeded, resumable, logged.

Each step renders a fresh batch of ShapesWorld scenes (templates drawn by ``TRAIN_MIX``; the
held-out (colour, shape) pairings never appear in training scenes with several objects), drops
captions for classifier-free guidance, and takes one AdamW step on the epsilon-prediction loss of
a cosine-schedule DDPM, plus, with ``grounding > 0``, that weight times the grounding loss on the
maps T-SAM reads (``grounding.py``; logged as its own column). The frozen text encoder's outputs
are cached per caption. A checkpoint
(model, EMA, optimiser, step, both random generators) is written atomically every
``checkpoint_every`` steps and at the end; rerunning the same command resumes from it. The EMA
UNet is saved as a ``TSAMMiniPipeline`` folder in ``OUT/model``.
"""
from __future__ import annotations

import contextlib
import copy
import csv
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import interrupts
from .context import TextContext

if TYPE_CHECKING:
    import torch


RECIPES: dict[str, dict[str, object]] = {
    # the first bundled model: contextual last-layer states, [CLS]/[SEP] visible, no grounding loss;
    # its maps are nearly uniform
    "v1": dict(context="last", special_tokens=True, heads=8, cross_attention_32=False, grounding=0.0),
    # the ablations' choice (docs/tsam-mini.md): its maps localise, but at 6,000 steps it drew single
    # objects right 30% of the time, so it was not shipped
    "grounded": dict(context="embeddings", special_tokens=False, heads=8, cross_attention_32=False, grounding=1.0),
    # the bundled model since v2: the same with the grounding loss at weight 0.1; its maps localise
    # and it draws single objects right 91% of the time
    "v2": dict(context="embeddings", special_tokens=False, heads=8, cross_attention_32=False, grounding=0.1),
}
DEFAULT_RECIPE = "v2"
"""``tsam mini train --recipe``: named architectures and losses; ``TrainConfig()`` is the bundled
model's. Checkpoints written before a field existed resume with v1's value for it."""


def describe(recipe: dict[str, object]) -> str:
    """``context=last, special_tokens=True, ...`` for help texts."""
    return ", ".join(f"{k}={v}" for k, v in recipe.items())


@dataclass
class TrainConfig:
    steps: int = 6000
    batch_size: int = 32
    lr: float = 3e-4
    warmup: int = 200
    weight_decay: float = 0.01
    ema_decay: float = 0.999
    cfg_dropout: float = 0.1
    seed: int = 0
    checkpoint_every: int = 250
    log_every: int = 25
    # the architecture (``RECIPES``): what the cross-attention reads (model.TextContext), heads and
    # layers (model.build_unet), and the weight of the grounding loss on the maps T-SAM reads
    # (grounding.py; 0: none)
    context: str = str(RECIPES[DEFAULT_RECIPE]["context"])
    special_tokens: bool = bool(RECIPES[DEFAULT_RECIPE]["special_tokens"])
    heads: int = int(RECIPES[DEFAULT_RECIPE]["heads"])  # type: ignore[call-overload]
    cross_attention_32: bool = bool(RECIPES[DEFAULT_RECIPE]["cross_attention_32"])
    grounding: float = float(RECIPES[DEFAULT_RECIPE]["grounding"])  # type: ignore[arg-type]

    def text_context(self) -> TextContext:
        return TextContext(self.context, self.special_tokens)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to 10% of ``lr``."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def sample_batch(rng: np.random.Generator, batch_size: int) -> tuple[np.ndarray, list[str], list, list]:
    """``batch_size`` training scenes: images uint8 ``[B, W, W, 3]``, their captions, scenes and specs."""
    from .world import TRAIN_MIX, render, sample_example

    names = list(TRAIN_MIX)
    weights = np.array([TRAIN_MIX[n] for n in names], dtype=float)
    templates = rng.choice(len(names), size=batch_size, p=weights / weights.sum())
    images, captions, scenes, specs = [], [], [], []
    for k in templates:
        scene, caption, spec = sample_example(rng, names[k], split="train")
        images.append(render(scene))
        captions.append(caption)
        scenes.append(scene)
        specs.append(spec)
    return np.stack(images), captions, scenes, specs


class CaptionCache:
    """Frozen text-encoder outputs per caption (``[MAX_TOKENS, 384]`` and the attention mask)."""

    def __init__(self, tokenizer, text_encoder, device, context: TextContext | None = None) -> None:
        self.tokenizer, self.text_encoder, self.device = tokenizer, text_encoder, device
        self.context = context or TextContext()
        self.cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        from .model import encode_texts

        new = sorted({c for c in captions if c not in self.cache})
        if new:
            hidden, mask = encode_texts(self.tokenizer, self.text_encoder, new, self.device, self.context)
            for c, h, m in zip(new, hidden, mask):
                self.cache[c] = (h, m)
        return torch.stack([self.cache[c][0] for c in captions]), torch.stack([self.cache[c][1] for c in captions])


def train(out: str | Path, cfg: TrainConfig | None = None, *, device: str = "cpu", time_budget_s: float | None = None,
          stop_after: int | None = None, progress: bool = True, threads: str | int | None = None) -> Path:
    """Train (or resume) into ``out``; returns the saved model folder ``out/model``.

    ``time_budget_s`` / ``stop_after`` end this run early (after that long / that many steps), with a
    checkpoint: the next call continues exactly where it stopped. Ctrl-C or SIGTERM does the same at
    the end of the step in progress, then raises ``KeyboardInterrupt``. ``threads``: torch's CPU
    threads (a number, or ``"auto"`` to follow the machine's load); ``None`` leaves them alone.
    """
    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler
    from tqdm.auto import tqdm

    from ..threads import Threads, flush_denormals
    from .model import TSAMMiniPipeline, build_unet, load_text_encoder, sampling_scheduler

    cfg = cfg or TrainConfig()
    context = cfg.text_context()  # a bad --context fails before anything is written
    cpu_threads = Threads(threads)
    flush_denormals()  # tiny values late in training otherwise slow CPU arithmetic several-fold
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path, log_path = out / "checkpoint.pt", out / "train_log.csv"
    tokenizer, text_encoder = load_text_encoder(device)
    unet = build_unet(cfg.seed, cfg.heads, cfg.cross_attention_32).to(device).train()
    ema = copy.deepcopy(unet).eval().requires_grad_(False)
    grounding = _GroundingReader(unet, tokenizer) if cfg.grounding > 0 else None
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    noise_schedule = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    step = 0
    if ckpt_path.exists():
        state = _load_checkpoint(ckpt_path, device)
        if {**asdict(TrainConfig()), **RECIPES["v1"], **state["config"], "steps": 0} != {**asdict(cfg), "steps": 0}:
            raise ValueError(f"{ckpt_path} was trained with {state['config']}; resume with the same settings or another --out")
        unet.load_state_dict(state["unet"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        rng.bit_generator.state = state["rng"]
        gen.set_state(state["torch_rng"])
        step = state["step"]
    encode = CaptionCache(tokenizer, text_encoder, device, context)
    alphas = noise_schedule.alphas_cumprod.to(device)

    def save_checkpoint() -> None:
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save({"unet": unet.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(), "step": step,
                    "rng": rng.bit_generator.state, "torch_rng": gen.get_state(), "config": asdict(cfg)}, tmp)
        os.replace(tmp, ckpt_path)

    new_log = not log_path.exists()
    start, losses, ground_values, first = time.time(), [], [], step
    with open(log_path, "a", newline="") as log_file, tqdm(total=cfg.steps, initial=step, disable=not progress, desc="train") as bar, \
            interrupts.deferred() as stop, (grounding.recorder.install() if grounding else contextlib.nullcontext()):
        log = csv.writer(log_file)
        if new_log:
            log.writerow(["step", "loss", "lr", "seconds"] + (["grounding"] if grounding else []))
        while step < cfg.steps and (time_budget_s is None or time.time() - start < time_budget_s) \
                and (stop_after is None or step - first < stop_after):
            if stop:  # Ctrl-C or SIGTERM: checkpoint at this step boundary, then stop
                save_checkpoint()
                raise KeyboardInterrupt(stop["signal"])
            cpu_threads.adapt()
            images, captions, scenes, specs = sample_batch(rng, cfg.batch_size)
            dropped = rng.random(len(captions)) < cfg.cfg_dropout
            captions = ["" if d else c for c, d in zip(captions, dropped)]
            hidden, mask = encode(captions)
            x0 = torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1
            noise = torch.randn(x0.shape, generator=gen).to(device)
            t = torch.randint(0, 1000, (x0.shape[0],), generator=gen).to(device)
            a = alphas[t].view(-1, 1, 1, 1)
            xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
            with grounding.recorder.capture() if grounding else contextlib.nullcontext():
                pred = unet(xt, t, encoder_hidden_states=hidden, encoder_attention_mask=mask).sample
            diffusion = loss = F.mse_loss(pred, noise)
            if grounding:
                kept = [None if d else s for s, d in zip(scenes, dropped)]  # a dropped caption names nothing
                ground = grounding.loss(grounding.recorder.mean(), kept, specs, captions)
                ground_values.append(ground.item())
                loss = diffusion + cfg.grounding * ground
            for group in opt.param_groups:
                group["lr"] = lr_at(step, cfg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
            opt.step()
            with torch.no_grad():
                for pe, p in zip(ema.parameters(), unet.parameters()):
                    pe.lerp_(p, 1 - cfg.ema_decay)
            step += 1
            losses.append(diffusion.item())
            bar.update(1)
            if step % cfg.log_every == 0:
                extra = [f"{np.mean(ground_values):.5f}"] if grounding else []
                log.writerow([step, f"{np.mean(losses):.5f}", f"{lr_at(step - 1, cfg):.6g}", f"{time.time() - start:.1f}"] + extra)
                log_file.flush()
                bar.set_postfix(loss=f"{np.mean(losses):.4f}", **({"grounding": extra[0]} if extra else {}))
                losses, ground_values = [], []
            if step % cfg.checkpoint_every == 0:
                save_checkpoint()
    save_checkpoint()
    model_dir = out / "model"
    TSAMMiniPipeline(unet=ema, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=sampling_scheduler(),
                     text_context=context).save_pretrained(model_dir)
    return model_dir


class _GroundingReader:
    """The maps of the layers T-SAM reads on tsam-mini (the ``mini`` preset's), recorded with their
    gradients during training, and ``grounding.grounding_loss`` over them."""

    def __init__(self, unet, tokenizer) -> None:
        from ..adapters.unet import unet_cross_attention_layers
        from ..attention import CrossAttentionRecorder
        from ..config import TSAMConfig
        from ..guidance import select_layers

        size = unet.config.sample_size
        chosen = select_layers(unet_cross_attention_layers(unet, size, size), TSAMConfig.preset("mini"))
        self.map_size = (chosen[0].height, chosen[0].width)
        self.recorder = CrossAttentionRecorder.of(chosen, early_exit=False)
        self.tokenizer = tokenizer

    def loss(self, A: "torch.Tensor", scenes: list, specs: list, captions: list[str]) -> "torch.Tensor":
        import torch

        from .grounding import grounding_loss, grounding_targets

        tokens = [self.tokenizer.tokenize(c) for c in captions]
        coverage, weight = grounding_targets(scenes, specs, tokens, self.map_size, A.shape[-1])
        return grounding_loss(A, torch.from_numpy(coverage).to(A.device), torch.from_numpy(weight).to(A.device))


def _load_checkpoint(path: Path, device: str) -> dict:
    """The training state in ``path``; ValueError saying what to do when the file is damaged or foreign."""
    import torch

    from ..hub import first_line

    try:
        state = torch.load(path, map_location=device, weights_only=False)
        keys = set(state) if isinstance(state, dict) else set()
        missing = {"unet", "ema", "opt", "step", "rng", "torch_rng", "config"} - keys
    except Exception as e:  # torch.load raises RuntimeError, UnpicklingError, EOFError, ... on a damaged file
        raise ValueError(f"{path} is damaged or not a tsam-mini checkpoint ({first_line(e, 120)}); move it away to "
                         "start over, or train into another --out") from None
    if missing:
        raise ValueError(f"{path} is not a tsam-mini checkpoint (missing {', '.join(sorted(missing))}); "
                         "train into another --out")
    return state
