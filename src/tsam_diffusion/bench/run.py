"""``tsam bench run``: every (prompt, seed, method) image of a benchmark, resumable, on many processes.

Jobs are planned in a fixed order (prompt, then method, then seeds in chunks of ``batch_size``) and
chunk ``k`` belongs to process ``k % world_size``: the same command started under ``torchrun`` or
``accelerate launch`` splits the work deterministically, one GPU per process, all writing to the
same run directory. A job is done when its database row exists and its PNG is there; an image is
written under a temporary name and renamed, and its row is added after, so a process killed at any
moment loses at most the images in flight, and rerunning the command does what is left.

Every method sees the same seeds, so images are paired: the same initial noise for ``vanilla`` and
``tsam`` (a ``torch.Generator`` on the CPU per seed, identical on any device).
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ..methods import METHODS, GuidanceConfig, TSAMConfig, method_names
from ..files import save_png
from ..options import check_seed
from ..threads import Threads
from .db import BenchError, RunDB, check_one_device, devices
from .subjects import token_groups
from .suites import Prompt


DEFAULT = "default"  # ``Method.guidance`` of a bare ``tsam``: the model's own preset, known once it is loaded


@dataclass(frozen=True)
class Method:
    """A generation method: ``vanilla`` (no guidance), T-SAM with a preset (``tsam``, ``tsam:sd-ae``) or a
    baseline (``attend-excite``), each optionally with overrides (``tsam:mini[alpha=5]``)."""

    name: str
    guidance: GuidanceConfig | str | None  # DEFAULT[:overrides as JSON] until ``resolve`` names the model's preset

    def resolve(self, default_preset: str) -> "Method":
        if not (isinstance(self.guidance, str) and self.guidance.startswith(DEFAULT)):
            return self
        overrides = json.loads(self.guidance.removeprefix(DEFAULT).removeprefix(":") or "{}")
        return Method(self.name, TSAMConfig.preset(default_preset, **overrides))

    @property
    def needs_tokens(self) -> bool:
        return isinstance(self.guidance, GuidanceConfig) and self.guidance.needs_tokens

    @property
    def uses_tokens(self) -> bool:
        return isinstance(self.guidance, GuidanceConfig) and self.guidance.uses_tokens

    def config(self) -> dict[str, Any]:
        if isinstance(self.guidance, str):
            raise ValueError(f"method {self.name!r} is not resolved to a preset yet")
        if self.guidance is None or isinstance(self.guidance, TSAMConfig):  # as before other methods existed
            return {"tsam": None if self.guidance is None else self.guidance.to_dict()}
        return {"guidance": self.guidance.to_dict()}


def _overridable(cls: type) -> dict[str, Any]:
    return {f.name: f.type for f in dataclasses.fields(cls) if f.name != "name"}


def _steps(part: str) -> range:
    a, _, b = part.partition("-")
    return range(int(a), int(b or a) + 1)


def _override_value(kind: str, text: str) -> Any:
    """``alpha=5`` -> 5.0; ``update_steps=0-24`` or ``0+10+20`` -> a tuple; ``loss_threshold=none`` -> None."""
    kind = str(kind)
    if text.lower() == "none":
        return None
    if "tuple[int | str" in kind:  # layers: indices (ranges) or module names, joined by '+'
        return tuple(x for part in filter(None, text.split("+"))
                     for x in (_steps(part) if re.fullmatch(r"\d+(-\d+)?", part) else (part,)))
    if "tuple[int" in kind:
        return tuple(x for part in filter(None, text.split("+")) for x in _steps(part))
    if "tuple[float" in kind:
        return tuple(float(x) for x in filter(None, text.split("+")))
    if kind.startswith("bool"):
        flags = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
        if text.lower() not in flags:
            raise ValueError(text)
        return flags[text.lower()]
    if kind.startswith("int"):
        return int(text)
    if kind.startswith("float"):
        return float(text)
    return text


def _parse_overrides(name: str, cls: type, body: str) -> dict[str, Any]:
    overridable = _overridable(cls)
    overrides = {}
    for item in filter(None, (x.strip() for x in body.split(";"))):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in overridable:
            raise ValueError(f"method {name!r}: {item!r} is not KEY=VALUE with KEY one of {', '.join(overridable)}")
        try:
            overrides[key] = _override_value(overridable[key], value.strip())
        except ValueError:
            raise ValueError(f"method {name!r}: bad value in {item!r}") from None
    return overrides


def _split_methods(spec: str) -> list[str]:
    """Split on commas outside ``[...]``."""
    parts, depth, cur = [], 0, ""
    for ch in spec:
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return [p.strip() for p in [*parts, cur] if p.strip()]


def parse_methods(spec: str) -> list[Method]:
    """``"vanilla,tsam,tsam:sd-ae,attend-excite"`` -> methods; ``tsam`` alone is the model's default preset.

    A method may override fields of its preset in brackets, separated by ``;``:
    ``tsam:mini[alpha=5;gamma=2]``, ``tsam[update_steps=0-9;refinement_steps=0+10]`` (a sweep),
    ``attend-excite[alpha=10;thresholds=0.05+0.5+0.8]``.
    """
    methods = []
    for name in _split_methods(spec):
        m = re.fullmatch(r"([\w-]+)(?::([\w.-]+))?(?:\[(.*)\])?", name)
        if name == "vanilla":
            methods.append(Method(name, None))
            continue
        if not m or m.group(1) not in METHODS or (m.group(2) is not None and m.group(2) not in METHODS[m.group(1)].presets):
            raise ValueError(f"unknown method {name!r}; valid methods: vanilla, {', '.join(method_names())} "
                             "(each optionally with [KEY=VALUE;...] overrides)")
        cls, preset = METHODS[m.group(1)], m.group(2) or METHODS[m.group(1)].default_preset
        overrides = _parse_overrides(name, cls, m.group(3) or "")
        try:
            if preset is None and not overrides:
                methods.append(Method(name, DEFAULT))
            elif preset is None:
                cls(**overrides)  # bad values fail here, not after the model loads
                methods.append(Method(name, DEFAULT + ":" + json.dumps(overrides)))
            else:
                methods.append(Method(name, cls.preset(preset, **overrides)))
        except ValueError as e:
            raise ValueError(f"method {name!r}: {e}") from None
    if not methods:
        raise ValueError(f"no method given; valid methods: vanilla, {', '.join(method_names())}")
    if len({m.name for m in methods}) != len(methods):
        raise ValueError(f"a method is named twice in {spec!r}")
    return methods


def check_tokens(prompts: list[Prompt], methods: list[Method]) -> None:
    """A method that needs object words can only run on prompts they can be read from (``subjects``);
    one that reads them when it can (SynGen) must be able to do without (its parser) on the others."""
    missing = [p for p in prompts if token_groups(p) is None]
    if not missing:
        return
    needing = [m.name for m in methods if m.needs_tokens]
    if needing:
        raise BenchError(f"{', '.join(needing)} needs each prompt's object words, which cannot be read from {len(missing)} "
                         f"of the {len(prompts)} prompts (e.g. {missing[0].id}: {missing[0].text!r}); run it on prompts that "
                         "list their objects (shapes-*, ae-*, cc500, geneval's object prompts) or select such prompts")
    for m in methods:
        if m.uses_tokens:
            try:
                m.guidance.check_without_tokens()
            except (RuntimeError, ValueError) as e:
                raise BenchError(f"{m.name}: {len(missing)} of the {len(prompts)} prompts do not list their objects "
                                 f"(e.g. {missing[0].text!r}), and {e}") from None


def parse_seeds(spec: str) -> list[int]:
    """``"0-63"``, ``"0,1,5"``, ``"0-3,10"`` -> sorted distinct seeds."""
    seeds: set[int] = set()
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m or (m.group(2) and int(m.group(2)) < int(m.group(1))):
            raise ValueError(f"bad seed range {part!r} in {spec!r}: use N, N-M or a comma-separated list of them")
        first, last = int(m.group(1)), int(m.group(2) or m.group(1))
        check_seed(last)
        if last - first >= 1_000_000:
            raise ValueError(f"seed range {part!r} has over a million seeds; give a smaller range")
        seeds.update(range(first, last + 1))
    if not seeds:
        raise ValueError(f"no seeds in {spec!r}")
    return sorted(seeds)


@dataclass(frozen=True)
class Job:
    prompt: Prompt
    seed: int
    method: Method

    @property
    def job_id(self) -> str:
        return f"{self.prompt.id}/s{self.seed}/{self.method.name}"

    @property
    def image(self) -> str:
        """PNG path relative to the run directory."""
        safe = lambda s: re.sub(r"[^A-Za-z0-9._-]+", "_", s)  # noqa: E731
        suite = self.prompt.suite
        key = self.prompt.id.removeprefix(suite + ":")
        return f"images/{safe(suite)}/{safe(self.method.name)}/{safe(key)}_s{self.seed}.png"


def plan(prompts: list[Prompt], methods: list[Method], seeds: list[int], batch_size: int) -> list[list[Job]]:
    """All jobs in a fixed order, in chunks of at most ``batch_size`` seeds of one prompt and method."""
    chunks = []
    for prompt in prompts:
        for method in methods:
            for i in range(0, len(seeds), batch_size):
                chunks.append([Job(prompt, s, method) for s in seeds[i : i + batch_size]])
    return chunks


def shard(chunks: list[list[Job]], rank: int, world_size: int) -> list[list[Job]]:
    """This process's chunks: every ``world_size``-th one from ``rank`` (round robin, so each process
    gets a share of every prompt and method, and no chunk goes to two processes)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
    return chunks[rank::world_size]


def distributed_context() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun / accelerate's environment; (0, 1, 0) alone."""
    env = os.environ
    return int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0))


def device_label(device: Any) -> str:
    """``"cpu"``, ``"mps"`` or ``"cuda: NVIDIA H200"``: the kind of GPU too, as another kind may round differently."""
    import torch

    device = torch.device(device)
    return f"cuda: {torch.cuda.get_device_name(device)}" if device.type == "cuda" else device.type


def versions(device: Any) -> dict[str, str]:
    """The software versions and the device images are made on (each image row records them)."""
    import diffusers
    import torch
    import transformers

    from .. import __version__

    return {"tsam-diffusion": __version__, "torch": torch.__version__, "diffusers": diffusers.__version__,
            "transformers": transformers.__version__, "device": device_label(device)}


def run_benchmark(
    prompts: list[Prompt],
    methods: list[Method],
    seeds: list[int],
    out: str | Path,
    *,
    model: str,
    num_inference_steps: int | None = None,
    guidance_scale: float | None = None,
    height: int | None = None,
    width: int | None = None,
    dtype: str = "float32",
    device: str = "cpu",
    batch_size: int = 4,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
    pipeline: Any = None,
    threads: str | int | None = None,
) -> dict[str, int]:
    """Generate what is not done yet of this process's share; returns counts (planned, done before, made).

    ``threads``: torch's CPU threads (``tsam_diffusion.threads``: a number, or ``"auto"`` to follow
    the machine's load between batches); ``None`` leaves torch's setting alone.

    ``num_inference_steps``/``guidance_scale`` ``None`` and a bare ``tsam`` method take the model's own
    values (the settings record ``None``; each image row records the values used).
    """
    if not prompts:
        raise BenchError("the selection is empty: no prompts to generate")
    if batch_size < 1:
        raise BenchError(f"--batch-size must be >= 1, got {batch_size}")
    check_tokens(prompts, methods)
    cpu_threads = Threads(threads)
    out = Path(out)
    with _run_dir_errors(out):
        out.mkdir(parents=True, exist_ok=True)
        db = RunDB(out)
        settings = {"model": model, "steps": num_inference_steps, "guidance_scale": guidance_scale,
                    "height": height, "width": width, "dtype": dtype}
        db.claim_settings(settings)

    import torch

    from ..pipeline import TSAMPipeline

    def load() -> Any:
        return TSAMPipeline.from_pretrained(model, torch_dtype=getattr(torch, dtype)).to(device)

    if any(isinstance(m.guidance, str) for m in methods):  # the model's own preset: load it now
        pipeline = pipeline or load()
        methods = [m.resolve(pipeline.adapter.default_preset) for m in methods]
    with _run_dir_errors(out):
        for m in methods:
            db.claim_method(m.name, m.config())
        done = db.done_jobs()

    chunks = plan(prompts, methods, seeds, batch_size)
    mine = [[j for j in chunk if j.job_id not in done] for chunk in shard(chunks, rank, world_size)]
    mine = [c for c in mine if c]
    total = sum(len(c) for c in chunks)
    todo = sum(len(c) for c in mine)
    counts = {"planned": total, "done_before": len(done & {j.job_id for c in chunks for j in c}), "made": 0}
    if not todo:
        return counts

    from tqdm.auto import tqdm

    pipeline = pipeline or load()
    pipeline.set_progress_bar_config(disable=True)
    steps, scale = pipeline.adapter.sampling_settings(num_inference_steps, guidance_scale)
    sampling = {"num_inference_steps": steps, "guidance_scale": scale}
    versions_ = versions(pipeline.device)
    check_one_device(devices(db.images()) | {versions_["device"]}, f"continuing {out} on {versions_['device']}")
    bar = tqdm(total=todo, unit="img", desc=f"rank {rank}/{world_size}" if world_size > 1 else "images", disable=not progress)
    try:
        for chunk in mine:
            cpu_threads.adapt()
            t0 = time.perf_counter()
            job = chunk[0]
            result = pipeline(
                job.prompt.text, method=job.method.guidance, tokens=token_groups(job.prompt) if job.method.uses_tokens else None,
                **sampling, height=height, width=width, num_images_per_prompt=len(chunk),
                generator=[torch.Generator("cpu").manual_seed(j.seed) for j in chunk],
            )
            seconds = (time.perf_counter() - t0) / len(chunk)
            rows = [_row(j, image, result.diagnostics, b, model, versions_, seconds, out, sampling)
                    for b, (j, image) in enumerate(zip(chunk, result.images))]
            db.add_images(rows)
            counts["made"] += len(chunk)
            bar.update(len(chunk))
    except OSError as e:
        raise BenchError(f"writing to {out} failed ({e}); the images written so far are recorded, "
                         "free space or fix permissions and rerun the same command to continue") from e
    finally:
        bar.close()
    return counts


@contextmanager
def _run_dir_errors(out: Path) -> Iterator[None]:
    """OSError (unwritable run directory) -> BenchError saying what to do (RunDB reports SQLite errors itself)."""
    try:
        yield
    except OSError as e:
        raise BenchError(f"cannot write to the run directory {out}: {e}") from e


def _row(job: Job, image, diagnostics, b: int, model: str, versions_: dict, seconds: float, out: Path,
         sampling: dict[str, Any]) -> dict[str, Any]:
    """Write one image atomically (temporary name, then rename) and return its database row."""
    path = out / job.image
    path.parent.mkdir(parents=True, exist_ok=True)
    save_png(image, path)
    losses = diagnostics.losses
    return {
        "job_id": job.job_id, "suite": job.prompt.suite, "prompt_id": job.prompt.id, "prompt": job.prompt.text,
        "prompt_meta": job.prompt.meta, "seed": job.seed, "method": job.method.name,
        "config": {**job.method.config(), **sampling}, "image": job.image,
        "model": model, "versions": versions_, "seconds": seconds, "created": time.time(),
        "loss_first": float(losses[0, b]) if len(losses) else None,
        "loss_last": float(losses[-1, b]) if len(losses) else None,
        "updates": len(diagnostics.updates), "skipped": sum(s.image == b for s in diagnostics.skipped),
        "diagnostics": {"tokens": diagnostics.tokens[diagnostics.prompt_index[b]] if diagnostics.tokens else None,
                        "layers": diagnostics.layers, "notes": diagnostics.notes},
    }
