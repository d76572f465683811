"""The guided path's numbers against references written here, on tiny-sd and the bundled tsam-mini.

- T: ``text_attention_matrix`` of the text encoder's own ``output_attentions``, called here, at the
  content positions found here from the token ids (BOS/[CLS], EOS/[SEP] and padding out);
- the recorded maps: a plain attention (``softmax(q k^T / sqrt(d))``, heads then layers averaged) from
  each read layer's own ``to_q``/``to_k`` on the inputs that layer received, content columns only;
- one update: ``z - alpha * grad_z L`` by ``torch.autograd`` through the denoiser's own forward,
  with maps, smoothing, S (eq. 7) and the loss (eq. 14) re-implemented plainly here;
- early exit: the modules started during an update are exactly those of a full pass up to the last
  read layer, and nothing after it.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import pytest
import torch
import torch.nn.functional as F

from test_functional import ref_text_attention
from tsam_diffusion import TSAMConfig, TSAMPipeline
from tsam_diffusion.diagnostics import Diagnostics
from tsam_diffusion.guidance import TSAMGuidance

PROMPTS = {"tiny-sd": "a black car and a white clock", "tsam-mini": "a red circle and a blue square"}
CONFIG = TSAMConfig(alpha=50.0, gamma=2.0, update_steps=(0,), reference_steps=4, step_size_schedule="constant")


@dataclass
class Case:
    name: str
    tsam: TSAMPipeline
    prompt: str
    ids: torch.Tensor  # [N] token ids as the pipeline pads them
    content: list[int]  # content positions, found here
    attentions: torch.Tensor  # [L, H, N, N] the encoder's own probabilities
    bidirectional: bool
    cond_mask: torch.Tensor | None  # [1, s] the cross-attention key mask of the conditional pass, if any
    latent_shape: tuple[int, ...]
    call_denoiser: Callable[[torch.Tensor, torch.Tensor, Any], Any]
    size: int  # image size


def _encoder_attentions(encoder, ids, mask=None) -> torch.Tensor:
    before = encoder.config._attn_implementation
    encoder.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            out = encoder(ids[None], attention_mask=None if mask is None else mask[None], output_attentions=True)
    finally:
        encoder.set_attn_implementation(before)
    return torch.stack(out.attentions, 1)[0]


@pytest.fixture(scope="module", params=["tiny-sd", "tsam-mini"])
def case(request, tsam_pipe) -> Case:
    prompt = PROMPTS[request.param]
    if request.param == "tiny-sd":
        pipe = tsam_pipe.pipe
        tok = pipe.tokenizer
        ids = tok(prompt, padding="max_length", max_length=tok.model_max_length, return_tensors="pt").input_ids[0]
        eos = ids.tolist().index(tok.eos_token_id, 1)
        return Case("tiny-sd", tsam_pipe, prompt, ids, list(range(1, eos)), _encoder_attentions(pipe.text_encoder, ids),
                    False, None, (1, 4, 32, 32), lambda z, t, c: pipe.unet(pipe.scheduler.scale_model_input(z, t), t,
                                                                          encoder_hidden_states=c.cond), 128)
    tsam = TSAMPipeline.from_pretrained("tsam-mini")
    pipe = tsam.pipe
    pipe.set_progress_bar_config(disable=True)
    batch = pipe.tokenizer(prompt, padding="max_length", max_length=24, return_tensors="pt")
    ids, attention_mask = batch.input_ids[0], batch.attention_mask[0]
    sep = ids.tolist().index(pipe.tokenizer.sep_token_id)
    cond_mask = pipe.encode_prompt([prompt], 1, None, do_cfg=False)[1]
    return Case("tsam-mini", tsam, prompt, ids, list(range(1, sep)), _encoder_attentions(pipe.text_encoder, ids, attention_mask),
                True, cond_mask, (1, 3, 32, 32),
                lambda z, t, c: pipe.unet(pipe.scheduler.scale_model_input(z, t), t, encoder_hidden_states=c.cond,
                                          encoder_attention_mask=c.extra["cond_mask"]), 32)


def _guidance(case: Case, config: TSAMConfig = CONFIG):
    adapter = case.tsam.adapter
    d = Diagnostics([case.prompt], [], [], [0], None)
    g = TSAMGuidance(adapter, config, [case.prompt], [0], case.size, case.size, d)
    cond = adapter.encode_prompt([case.prompt], None, 1, 1.0)
    case.tsam.pipe.scheduler.set_timesteps(4)
    t = case.tsam.pipe.scheduler.timesteps[0]
    z = torch.randn(case.latent_shape, generator=torch.Generator().manual_seed(0))
    return g, d, cond, t, z


# ------------------------------------------------------------------ plain references, differentiable
def plain_probs(module, hidden: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Head-averaged ``softmax(q k^T / sqrt(d))`` from the layer's own projections: ``[B, Nq, s]``."""
    if hidden.ndim == 4:  # [B, C, H, W] -> [B, HW, C]
        hidden = hidden.flatten(2).transpose(1, 2)
    q = F.linear(hidden, module.to_q.weight, module.to_q.bias)
    k = F.linear(context, module.to_k.weight, module.to_k.bias)
    b, n, c = q.shape
    heads = module.heads
    d = c // heads
    q = q.view(b, n, heads, d).transpose(1, 2)
    k = k.view(b, -1, heads, d).transpose(1, 2)
    scores = q @ k.transpose(-1, -2) / math.sqrt(d)
    if mask is not None:
        scores = scores.masked_fill(~mask.bool()[:, None, None, :], float("-inf"))
    return scores.softmax(-1).mean(1)


def plain_S(A: torch.Tensor, h: int, w: int, sigma: float, ks: int) -> torch.Tensor:
    """Eq. 7 with causal rows, for one image: ``A`` ``[M, n]`` -> ``[n, n]``; smoothing by shifted sums."""
    n = A.shape[1]
    maps = A.T.reshape(n, h, w)
    c = (ks - 1) / 2
    g = torch.tensor([math.exp(-(((i - c) / (2 * sigma)) ** 2)) for i in range(ks)])
    kern = g[:, None] * g[None, :]
    kern = kern / kern.sum()
    p = ks // 2
    padded = F.pad(maps[:, None], (p, p, p, p), mode="reflect")[:, 0]
    smooth = sum(kern[dy, dx] * padded[:, dy:dy + h, dx:dx + w] for dy in range(ks) for dx in range(ks))
    flat = smooth.reshape(n, -1)
    rows = []
    for i in range(n):
        cos = torch.stack([torch.dot(flat[i], flat[j]) / (flat[i].norm() * flat[j].norm()) for j in range(i + 1)])
        rows.append(torch.cat([cos / cos.sum(), torch.zeros(n - i - 1)]))
    return torch.stack(rows)


def plain_loss(T: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
    """Eq. 14: ``sum_i (i / n) sum_{j <= i} |T_ij - S_ij|`` (1-based i)."""
    n = T.shape[0]
    return sum((i + 1) / n * sum((T[i, j] - S[i, j]).abs() for j in range(i + 1)) for i in range(n))


@contextmanager
def removed_after(handles: list) -> Iterator[None]:
    """Remove the hook ``handles`` when the block ends."""
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def record_inputs(modules: dict[str, torch.nn.Module], store: list) -> list:
    """Forward pre-hooks that keep (module, hidden states, context) of every call while grad is on."""
    def hook(module, args, kwargs):
        if torch.is_grad_enabled():
            store.append((module, args[0] if args else kwargs["hidden_states"], kwargs["encoder_hidden_states"]))

    return [m.register_forward_pre_hook(hook, with_kwargs=True) for m in modules.values()]


# ------------------------------------------------------------------ the tests
def test_T_is_the_encoders_attention_at_the_content_positions(case):
    g, d, *_ = _guidance(case)
    want = ref_text_attention(case.attentions, case.content, case.bidirectional, CONFIG.gamma).float()
    assert d.T[0].shape == want.shape == (len(case.content), len(case.content))
    torch.testing.assert_close(d.T[0], want, rtol=1e-5, atol=1e-6)
    assert len(d.tokens[0]) == len(case.content)


def test_recorded_maps_are_the_layers_own_attention_probabilities(case):
    g, d, cond, t, z = _guidance(case)
    seen: list = []
    with removed_after(record_inputs(g.recorder.modules, seen)), g.recorder.install():
        g.update(z, t, cond, 0, 0, CONFIG.alpha)
    assert sorted(id(m) for m, *_ in seen) == sorted(id(m) for m in g.recorder.modules.values())  # each read layer once
    with torch.no_grad():
        full = torch.stack([plain_probs(m, x, c, case.cond_mask) for m, x, c in seen]).mean(0)  # [1, M, s]
    want = full[:, :, case.content]
    assert d.A_first.shape == want.shape
    torch.testing.assert_close(d.A_first, want, rtol=1e-4, atol=1e-6)
    # the maps are distributions over all key tokens: the content columns hold a part of each row (all of
    # it where [CLS]/[SEP] are hidden from the cross-attention, as in the bundled tsam-mini)
    assert torch.allclose(full.sum(-1), torch.ones(()), atol=1e-5) and float(want.sum(-1).max()) < 1 + 1e-5
    if case.name == "tiny-sd":
        assert float(want.sum(-1).max()) < 1 - 1e-3


def test_one_update_is_z_minus_alpha_grad_L(case):
    g, d, cond, t, z = _guidance(case)
    with g.recorder.install():
        new, record = g.update(z, t, cond, 0, 0, CONFIG.alpha)

    T = torch.tensor(ref_text_attention(case.attentions, case.content, case.bidirectional, CONFIG.gamma).tolist())
    zr = z.clone().requires_grad_(True)
    seen: list = []
    with removed_after(record_inputs(g.recorder.modules, seen)), torch.enable_grad():
        case.call_denoiser(zr, t, cond)  # the denoiser's whole forward, default processors
        A = torch.stack([plain_probs(m, x, c, case.cond_mask) for m, x, c in seen]).mean(0)[0][:, case.content]
        h, w = d.map_size
        loss = plain_loss(T, plain_S(A, h, w, CONFIG.sigma, CONFIG.kernel_size))
        (grad,) = torch.autograd.grad(loss, zr)
    loss = loss.detach()
    assert float(record.loss[0]) == pytest.approx(loss.item(), rel=1e-4)
    assert float(grad.abs().max()) > 0
    torch.testing.assert_close(new, z - CONFIG.alpha * grad, rtol=1e-3, atol=1e-5 * float(CONFIG.alpha * grad.abs().max()))


def test_early_exit_runs_nothing_after_the_last_layer_read(case):
    unet = case.tsam.adapter.denoiser
    names = {m: n for n, m in unet.named_modules()}

    def started(early_exit: bool) -> list[str]:
        g, d, cond, t, z = _guidance(case)
        g.recorder.early_exit = early_exit
        order: list[str] = []
        hooks = [m.register_forward_pre_hook(lambda mod, _a: order.append(names[mod])) for m in names if m is not unet]
        with removed_after(hooks), g.recorder.install():
            g.update(z, t, cond, 0, 0, CONFIG.alpha)
        return order

    full, early = started(False), started(True)
    read = list(_guidance(case)[0].recorder.modules)
    cut = max(i for i, n in enumerate(full) if any(n == r or n.startswith(r + ".") for r in read))
    assert early == full[:cut + 1]  # the same modules in the same order, up to the last read layer's own parts
    assert len(early) < len(full) and "conv_out" in full and "conv_out" not in early
