"""Item age (model/item_age.py): buckets, the first timestamps prepare records, and a run that carries them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rotorec.features.adapters.events import events_source
from rotorec.features.artifacts import NO_FIRST_SEEN, item_first_seen
from rotorec.features.prepare import PrepareOptions, prepare
from rotorec.features.vocab import Vocabulary
from rotorec.features.vocab import OOV
from rotorec.model.cold_items import ColdItems
from rotorec.model.item_age import AGE_BUCKETS, ItemAge


def test_buckets_are_log2_minutes_since_first_seen_with_zero_for_no_time_and_one_for_new_items() -> None:
    age = ItemAge(item_vocab_size=4, d_model=8)
    age.set_first_seen(np.array([NO_FIRST_SEEN, NO_FIRST_SEEN, 1_000, 1_000]))
    minutes = 60
    cases = [  # (item, seconds, has_time, bucket)
        (0, 5_000, True, 0),  # padding
        (2, 5_000, False, 0),  # no time: no age
        (1, 5_000, True, 1),  # OOV: an item never seen is new
        (2, 1_000, True, 1),  # at its first event
        (2, 1_000 + 59, True, 1),
        (2, 1_000 + 1 * minutes, True, 2),  # 1 minute: ⌊log2 2⌋ = 1
        (2, 1_000 + 2 * minutes, True, 2),
        (2, 1_000 + 3 * minutes, True, 3),  # ⌊log2 4⌋ = 2
        (2, 1_000 + 1_439 * minutes, True, 11),  # a day less a minute: ⌊log2 1440⌋ = 10
        (3, 500, True, 1),  # before its first event (clock skew at serving): new, not negative
        (3, 1_000 + 10**10, True, AGE_BUCKETS),  # centuries: the last bucket
    ]
    item, seconds, has_time, expected = (torch.tensor(column) for column in zip(*cases))
    assert age.buckets(item, seconds, has_time).tolist() == expected.tolist()


def test_prepare_records_each_items_first_timestamp_across_every_split(tmp_path: Path) -> None:
    log = tmp_path / "log.csv"
    rows = ["u,a,1700000300", "u,b,1700000100", "v,a,1700000200", "v,c,1700000400", "w,c,1700000500", "w,b,1700000600"]
    rare = ["u,r,1600000000"]  # seen once: below min_count, so it maps to OOV, which must stay new
    log.write_text("user_id,item_id,timestamp\n" + "\n".join(rows + rare) + "\n")
    prepare(events_source(log), tmp_path / "o", PrepareOptions(max_len=10, min_count=2, progress=False))
    items = Vocabulary.load(tmp_path / "o" / "vocab", "item")
    first_seen = item_first_seen(tmp_path / "o")
    ids = items.lookup(["a", "b", "c"])
    assert first_seen[ids].tolist() == [1700000200, 1700000100, 1700000400]
    assert items.lookup(["r"]).tolist() == [OOV]
    assert first_seen[:2].tolist() == [NO_FIRST_SEEN, NO_FIRST_SEEN] and len(first_seen) == items.size


@pytest.mark.slow
def test_a_trained_run_saves_the_prepared_first_timestamps_with_its_weights(trained_run: Path, tiny_prepared: Path) -> None:
    """The shared trained run has model.item_age on, so the service tests score through it too."""
    from rotorec.training.run import load_run

    model = load_run(trained_run).model
    assert model.item_age is not None
    assert model.item_age.first_seen.tolist() == item_first_seen(tiny_prepared).tolist()
    assert (model.item_age.first_seen[2:] > 1_600_000_000).all()


def test_cold_items_read_untrained_ids_as_oov_and_drop_only_real_ids_in_training() -> None:
    cold = ColdItems(item_vocab_size=6, dropout=0.5, untrained_as_oov=True)
    cold.set_trained(torch.tensor([False, False, True, False, True, True]))
    item = torch.tensor([[0, 1, 2, 3, 4, 5]])
    assert cold.eval()(item).tolist() == [[0, 1, 2, OOV, 4, 5]]  # 3 never occurred in training
    torch.manual_seed(0)
    dropped = cold.train()(item.expand(4000, -1))
    assert (dropped[:, :2] == item[:, :2]).all() and (dropped[:, 3] == OOV).all()  # PAD and OOV stay
    rate = (dropped[:, [2, 4, 5]] == OOV).float().mean().item()
    assert abs(rate - 0.5) < 0.03, rate


@pytest.mark.slow
def test_a_trained_run_marks_exactly_the_training_splits_items(tiny_prepared: Path, tmp_path: Path) -> None:
    from conftest import REPO, run_rotorec
    from rotorec.features.dataset import SequenceDataset
    from rotorec.training.run import load_run

    run_rotorec(
        "train", "--data", str(tiny_prepared), "--config", str(REPO / "configs" / "tiny.yaml"), "--out", str(tmp_path / "run"),
        "--no-progress", "--set", "train.max_steps=2", "--set", "train.eval_every=2", "--set", "model.d_model=16",
        "--set", "model.oov_untrained_items=true", "--set", "model.item_dropout=0.1",
    )  # fmt: skip
    cold = load_run(tmp_path / "run").model.cold_items
    present = SequenceDataset(tiny_prepared, "train").items_present()
    assert not present[0] and cold.trained.tolist() == present.tolist()  # PAD never occurs: the buffer was set, not left all-true
