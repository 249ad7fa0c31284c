"""Baselines: they learn what they should, and they are scored by the evaluation's own code."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, run_rotorec
from rotorec.features.dataset import SequenceDataset
from rotorec.training import retrieval
from rotorec.training.baselines import PopularityScorer
from rotorec.training.metrics import next_item_metrics
from rotorec.training.evaluate import _retrieval
from rotorec.training.run import load_run

sys.path.insert(0, str(REPO / "benchmarks"))
from baselines.sasrec import fit  # noqa: E402

CYCLE = 30

pytestmark = pytest.mark.slow  # every test uses a `rotorec prepare` subprocess (module fixture)


@pytest.fixture(scope="module")
def cyclic_sequences(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every user walks a cycle of 30 items from a random start: the next item is always the
    current one plus 1, so a sequence model can reach NDCG ≈ 1 and popularity cannot."""
    root = tmp_path_factory.mktemp("cyclic")
    rng = np.random.default_rng(0)
    lines = []
    for user in range(300):
        start, length = int(rng.integers(CYCLE)), int(rng.integers(6, 14))
        lines.append(" ".join([f"u{user}", *(f"i{(start + k) % CYCLE}" for k in range(length))]))
    (root / "Cycle.txt").write_text("\n".join(lines) + "\n")
    run_rotorec(
        "prepare",
        "--format",
        "amazon-seq",
        "--input",
        str(root / "Cycle.txt"),
        "--out",
        str(root / "data"),
        "--max-len",
        "20",
        "--no-progress",
    )
    return root / "data"


def test_sasrec_overfits_a_deterministic_next_item_task(cyclic_sequences: Path) -> None:
    torch.set_num_threads(1)
    model, training = fit(
        cyclic_sequences,
        width=32,
        heads=1,
        dropout=0.0,
        lr=5e-3,
        batch_size=64,
        max_steps=300,
        eval_every=100,
        patience=3,
        minutes=5,
        progress=False,
    )
    ranks, _ = retrieval.next_item_ranks(model, SequenceDataset(cyclic_sequences, "test"))
    popularity, _ = retrieval.next_item_ranks(
        PopularityScorer(SequenceDataset(cyclic_sequences, "train")), SequenceDataset(cyclic_sequences, "test")
    )
    assert next_item_metrics(ranks)["ndcg@10"] >= 0.95, training["history"]
    assert next_item_metrics(popularity)["ndcg@10"] < 0.5


def test_popularity_ranks_items_by_training_target_count(cyclic_sequences: Path) -> None:
    train, test = SequenceDataset(cyclic_sequences, "train"), SequenceDataset(cyclic_sequences, "test")
    counts = train.target_item_counts().numpy()[2:]
    ranks, _ = retrieval.next_item_ranks(PopularityScorer(train), test)
    batch = test.__getitems__(np.arange(len(test)))
    targets = [int(batch.item[w, t]) - 2 for w in range(len(test)) for t in range(1, int(batch.lengths[w])) if batch.target[w, t]]
    expected = [int((counts >= counts[target]).sum()) for target in targets]  # ties count against the target
    assert ranks.tolist() == expected


def test_model_and_baselines_are_ranked_by_one_function(cyclic_sequences: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`rotorec evaluate`'s retrieval, the popularity baseline and SASRec all call
    training.retrieval.target_ranks: a number from any of them is computed the same way."""
    run_rotorec(
        "train",
        "--data",
        str(cyclic_sequences),
        "--config",
        str(REPO / "configs" / "amazon_next_item.yaml"),
        "--out",
        str(tmp_path / "run"),
        "--no-progress",
        "--set",
        "train.max_steps=4",
        "--set",
        "train.eval_every=4",
        "--set",
        "model.d_model=16",
        "--set",
        "model.siren.hidden=8",
    )
    calls = []
    original = retrieval.target_ranks
    monkeypatch.setattr(retrieval, "target_ranks", lambda scores, targets: calls.append(1) or original(scores, targets))
    test = SequenceDataset(cyclic_sequences, "test")
    counted = []
    _retrieval(load_run(tmp_path / "run"), test, seed=0, exclude_seen=False)
    counted.append(len(calls))
    retrieval.next_item_ranks(PopularityScorer(SequenceDataset(cyclic_sequences, "train")), test)
    counted.append(len(calls))
    sasrec, _ = fit(cyclic_sequences, width=16, max_steps=1, eval_every=10, progress=False)
    retrieval.next_item_ranks(sasrec, test)
    counted.append(len(calls))
    assert 0 < counted[0] < counted[1] < counted[2]
