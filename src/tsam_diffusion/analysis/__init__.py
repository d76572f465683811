"""The paper's section 4 analysis as tools (``tsam analyze``): text embeddings vs the text encoder's
self-attention (``text``), embeddings vs cross-attention maps over denoising (``attention``,
``proposition``), map overlap vs judged outcomes (``outcomes``), and parameter sweeps (``sweep``)."""
