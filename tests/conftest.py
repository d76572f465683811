"""Shared fixtures: the built-in tiny-sd pipeline, built once per test session."""
from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def tiny_sd():
    """The diffusers StableDiffusionPipeline behind tiny-sd (CLIP tokenizer, UNet, VAE, PNDM)."""
    from tsam_diffusion.tiny import build_tiny_sd

    pipe = build_tiny_sd()
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="session")
def tsam_pipe(tiny_sd):
    """TSAMPipeline around ``tiny_sd``."""
    from tsam_diffusion import TSAMPipeline

    return TSAMPipeline(tiny_sd)
