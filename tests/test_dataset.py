"""The torch Dataset: batches equal the stored windows, padding is masked, loaders cover all."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from rotorec.features.artifacts import FeatureSchema
from rotorec.features.dataset import SequenceDataset


def test_batch_matches_stored_windows_and_pads_with_masks(tiny_prepared: Path) -> None:
    dataset = SequenceDataset(tiny_prepared, "valid")
    stored = pq.read_table(tiny_prepared / "valid.parquet").to_pylist()
    picks = [0, len(dataset) - 1, len(dataset) // 2]
    batch = dataset.__getitems__(picks)
    width = max(stored[i]["length"] for i in picks)
    assert batch.item.shape == (3, width) and batch.labels.shape == (3, width, 3)
    for b, i in enumerate(picks):
        n = stored[i]["length"]
        assert batch.lengths[b] == n and batch.valid[b].sum() == n and batch.users[b] == stored[i]["user"]
        assert batch.item[b, :n].tolist() == stored[i]["item"] and (batch.item[b, n:] == 0).all()
        assert batch.timestamp[b, :n].tolist() == stored[i]["timestamp"]
        assert batch.target[b, :n].tolist() == stored[i]["target"] and not batch.target[b, n:].any()
        clicks = stored[i]["label_click"]
        assert batch.labels[b, :n, 0].tolist() == [float(c == 1) for c in clicks]
        assert batch.label_mask[b, :n, 0].tolist() == [c != -1 for c in clicks] and not batch.label_mask[b, n:].any()
        assert np.allclose(batch.probabilities[b, :n, 0].numpy(), stored[i]["prob_click"])
        assert batch.categorical["category"][b, :n, 0].tolist() == stored[i]["cat_category"]


def test_loader_yields_every_window_once(tiny_prepared: Path) -> None:
    dataset = SequenceDataset(tiny_prepared, "train")
    seen = []
    for batch in dataset.loader(batch_size=7, shuffle=True, seed=1):
        seen += batch.row[batch.valid].tolist()
        assert batch.item.dtype == torch.int64 and batch.valid.dtype == torch.bool
    stored = pq.read_table(tiny_prepared / "train.parquet").column("row").combine_chunks().flatten().to_pylist()
    assert sorted(seen) == sorted(stored)


def test_fixed_padding_and_schema(tiny_prepared: Path) -> None:
    dataset = SequenceDataset(tiny_prepared, "test")
    batch = dataset.__getitems__([0, 1], pad_to=64)
    assert batch.item.shape == (2, 64)
    schema = FeatureSchema.load(tiny_prepared)
    assert schema.tasks == ["click", "like", "long_dwell"] and schema.split.protocol == "temporal"
    assert schema.fingerprint() == FeatureSchema.load(tiny_prepared).fingerprint()
    assert int(batch.action.max()) < schema.action_vocab_size
    assert int(batch.item.max()) < schema.item_vocab_size
