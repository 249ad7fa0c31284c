"""Warm-up: one synthetic request through the real path before ready (docs/serving.md,
"Lifecycle and warm-up" and "Model artifacts").

A model whose warm-up probabilities are not finite and within [0, 1] is refused."""

from __future__ import annotations

import numpy as np

from rotorec.service.schemas import RankRequest
from rotorec.service.scoring import ServedModel

WARMUP_TIME = 1_717_000_000


class WarmupError(RuntimeError):
    pass


def warm_up(model: ServedModel) -> None:
    known = [str(k) for k in model.items.keys[:2]] or ["warm-up"]
    action = next(iter(model.actions), None)
    history = [{"item_id": known[0], "timestamp": WARMUP_TIME - 60, "action": action}] if action else []
    request = RankRequest.model_validate(
        {"user_id": "warm-up", "request_time": WARMUP_TIME, "history": history, "candidates": [{"item_id": k} for k in known]}
    )
    (scored,) = model.score([model.feed(request, max_history=len(history))])
    probabilities = scored.probabilities
    if not (np.isfinite(probabilities).all() and (probabilities >= 0).all() and (probabilities <= 1).all()):
        raise WarmupError(f"warm-up produced probabilities outside [0, 1]: {probabilities.tolist()}")
