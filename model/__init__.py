"""model: rotary encodings (SIREN-RoPE and baselines), mixers and the generative ranker."""
