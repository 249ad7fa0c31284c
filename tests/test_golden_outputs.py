"""Refactors keep the numbers: fixed models' outputs, saved before a change, must come out again.

`tests/data/golden_outputs.safetensors` holds, for seeded models of every mixer stack, the hidden
states, task logits and next-item queries of a fixed random batch, and the final hidden states
of candidates scored against that history. It was written by the code before issue 13's
reshaping of the ranker; a change that is meant to alter numbers regenerates it on purpose:

    python tests/test_golden_outputs.py   # rewrites the file from the current code
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from rotorec.model.config import ModelConfig
from rotorec.model.inputs import TimeInputs
from rotorec.model.ranker import Ranker

GOLDEN = Path(__file__).parent / "data" / "golden_outputs.safetensors"
TOLERANCE = 1e-6  # absolute; the same arithmetic in the same order repeats to the last bit on one machine
STACKS = {
    "attention": {"mixers": ["attention", "attention"], "encoding": "siren_rope"},
    "rope": {"mixers": ["attention", "attention"], "encoding": "rope"},
    "rotrnn": {"mixers": ["rotrnn", "attention"], "encoding": "siren_rope", "rotrnn": {"heads": 4, "state": 4, "time_conditioned": True}},
    "fprnn": {"mixers": ["fprnn", "attention"], "encoding": "none", "fprnn": {"max_iterations_eval": 4}},
}
BATCH, LENGTH, CANDIDATES, ITEMS, CATEGORIES = 3, 12, 5, 40, 6


def _time(generator: torch.Generator, index: torch.Tensor, start: int) -> TimeInputs:
    shape = index.shape
    seconds = start + torch.cumsum(torch.randint(0, 7_200, shape, generator=generator), dim=1)
    return TimeInputs(
        slot=index,
        seconds=seconds,
        has_time=torch.rand(shape, generator=generator) > 0.1,
        second_of_day=torch.remainder(seconds, 86_400),
        day_of_week=torch.remainder(seconds // 86_400, 7),
        categorical={"category": torch.randint(1, CATEGORIES, (*shape, 1), generator=generator)},
    )


def golden_outputs() -> dict[str, torch.Tensor]:
    outputs = {}
    for name, stack in STACKS.items():
        torch.manual_seed(0)
        config = ModelConfig(
            item_vocab_size=ITEMS,
            action_vocab_size=4,
            tasks=["click", "like"],
            categorical={"category": {"vocab_size": CATEGORIES}},
            d_model=16,
            heads=2,
            layers=2,
            dropout=0.0,
            siren={"branches": ["timestamp", "cyclic", "categorical"], "hidden": 8},
            next_item={"loss": "full"},
            **stack,
        )
        model = Ranker(config).eval()
        generator = torch.Generator().manual_seed(1)
        item = torch.randint(2, ITEMS, (BATCH, LENGTH), generator=generator)
        valid = torch.arange(LENGTH).expand(BATCH, -1) < torch.tensor([[LENGTH], [LENGTH - 3], [4]])
        index = torch.arange(LENGTH).expand(BATCH, -1).clone()
        time = _time(generator, index, 1_704_067_200)
        action = torch.randint(0, 4, (BATCH, LENGTH), generator=generator)
        candidates = torch.randint(2, ITEMS, (BATCH, CANDIDATES), generator=generator)
        candidate_time = _time(generator, torch.full((BATCH, CANDIDATES), LENGTH), 1_704_067_200 + 90_000)
        with torch.no_grad():
            hidden, logits, queries, _ = model(item * valid, time.categorical, action, time, valid)
            history = model.encode(item * valid, time.categorical, action, time, valid)
            scored = model.candidate_hidden(history, candidates, candidate_time.categorical, candidate_time)
        outputs.update({f"{name}.hidden": hidden, f"{name}.logits": logits, f"{name}.queries": queries, f"{name}.candidates": scored})
    return outputs


def test_outputs_match_those_saved_before_the_refactor() -> None:
    if not GOLDEN.is_file():
        pytest.fail(f"{GOLDEN} is missing: run `python tests/test_golden_outputs.py` on the reference code")
    saved, now = load_file(GOLDEN), golden_outputs()
    assert sorted(saved) == sorted(now)
    for key, expected in saved.items():
        torch.testing.assert_close(now[key], expected, rtol=0.0, atol=TOLERANCE, msg=key)


if __name__ == "__main__":
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    save_file({key: value.clone().contiguous() for key, value in golden_outputs().items()}, str(GOLDEN))
    print(f"wrote {GOLDEN}")
