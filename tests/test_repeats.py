"""The repeat gate (model/repeats.py): history membership against Python sets, its offsets in both
softmax losses against direct computations, and that training learns the sign of repeats."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rotorec.features.dataset import SequenceBatch
from rotorec.model.config import ModelConfig, NextItemConfig
from rotorec.model.inputs import batch_inputs
from rotorec.model.losses import FIRST_ITEM_ID, NegativeSampler, sampled_softmax_loss
from rotorec.model.ranker import Ranker
from rotorec.model.repeats import RepeatOffsets, history_columns, history_contains, query_histories
from rotorec.training.trainer import compute_loss


def random_windows(seed: int, windows: int = 5, length: int = 9, vocab: int = 14) -> tuple[torch.Tensor, torch.Tensor]:
    """Item ids with repeats, OOV (1) and right padding (0, valid False)."""
    generator = torch.Generator().manual_seed(seed)
    item = torch.randint(1, vocab, (windows, length), generator=generator)
    lengths = torch.randint(1, length + 1, (windows,), generator=generator)
    valid = torch.arange(length)[None, :] < lengths[:, None]
    return torch.where(valid, item, torch.zeros_like(item)), valid


def python_histories(item: torch.Tensor, valid: torch.Tensor, rows: torch.Tensor) -> list[set[int]]:
    held = []
    for window, position in rows.nonzero().tolist():
        held.append({int(item[window, s]) for s in range(position + 1) if valid[window, s] and item[window, s] >= FIRST_ITEM_ID})
    return held


@pytest.mark.parametrize("seed", range(8))
def test_history_membership_matches_python_sets(seed: int) -> None:
    item, valid = random_windows(seed)
    rows = valid[:, 1:] & (torch.rand(valid[:, 1:].shape, generator=torch.Generator().manual_seed(seed + 100)) < 0.7)
    expected = python_histories(item, valid, rows)
    window, position = rows.nonzero(as_tuple=True)
    histories = query_histories(item, valid, window, position)
    catalogue = 14 - FIRST_ITEM_ID
    dense = history_columns(histories, catalogue)
    candidates = torch.randint(0, 16, (len(expected), 6), generator=torch.Generator().manual_seed(seed))
    shared = torch.randint(0, 16, (24,), generator=torch.Generator().manual_seed(seed + 7))  # repeats, ids absent from every history
    per_row, per_shared = history_contains(histories, candidates), history_contains(histories, shared)
    for n, held in enumerate(expected):
        assert {c + FIRST_ITEM_ID for c in dense[n].nonzero().flatten().tolist()} == held
        assert per_row[n].tolist() == [int(c) in held for c in candidates[n]]
        assert per_shared[n].tolist() == [int(c) in held for c in shared]


def test_the_catalogue_offsets_equal_a_dense_sum_forward_and_backward() -> None:
    """Histories that read an item several times raise it once."""
    item, valid = random_windows(5, windows=6, length=12, vocab=8)
    rows = valid[:, 1:]
    window, position = rows.nonzero(as_tuple=True)
    histories = query_histories(item, valid, window, position)
    assert any(len(set(h.tolist()) - {-1}) < int((h >= 0).sum()) for h in histories)  # some item read twice
    generator = torch.Generator().manual_seed(5)
    logits = torch.randn(len(window), 6, generator=generator).requires_grad_(True)
    offset = torch.randn(len(window), generator=generator).requires_grad_(True)
    got = RepeatOffsets(offset, histories).add_to_catalogue(logits)
    expected = logits + offset[:, None] * history_columns(histories, 6).float()
    weights = torch.randn(expected.shape, generator=generator)
    assert torch.allclose(got, expected)
    gradients_got = torch.autograd.grad((got * weights).sum(), (logits, offset))
    gradients_expected = torch.autograd.grad((expected * weights).sum(), (logits, offset))
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(gradients_got, gradients_expected))  # sums in another order


@pytest.mark.parametrize("log_q", [False, True])
def test_sampled_softmax_adds_the_offset_to_every_held_item(log_q: bool) -> None:
    """In-batch negatives: each logit is q·e + offset·[item in the row's history] (− log of the
    item's count in the batch with the correction); some positives repeat their own history."""
    generator = torch.Generator().manual_seed(3)
    table = torch.randn(8, 8, generator=generator)
    item, valid = random_windows(3, windows=4, length=7, vocab=8)
    rows = valid[:, 1:] & (item[:, 1:] >= FIRST_ITEM_ID)
    window, position = rows.nonzero(as_tuple=True)
    repeats = RepeatOffsets(offset=torch.randn(len(window), generator=generator), histories=query_histories(item, valid, window, position))
    query, positives = torch.randn(len(window), 8, generator=generator), item[:, 1:][rows]
    config = NextItemConfig(loss="sampled", negatives="in_batch", log_q_correction=log_q)
    loss = sampled_softmax_loss(query, positives, table, config, 1.0, repeats=repeats)
    held = python_histories(item, valid, rows)
    assert any(int(p) in h for p, h in zip(positives, held)) and len(set(positives.tolist())) < len(positives)
    count = torch.bincount(positives, minlength=8).float()
    expected = []
    for i in range(len(query)):
        correction = lambda j: torch.log(count[positives[j]]) if log_q else 0.0  # noqa: E731  log(m · count/m)
        logit = lambda j: query[i] @ table[positives[j]] - correction(j) + repeats.offset[i] * (int(positives[j]) in held[i])  # noqa: E731
        row = torch.stack([logit(i), *[logit(j) for j in range(len(query)) if positives[j] != positives[i]]])
        expected.append(-torch.log_softmax(row, 0)[0])
    assert torch.allclose(loss, torch.stack(expected).mean(), atol=1e-5)


def test_pooled_negatives_see_the_offset_too() -> None:
    """Popularity negatives with log-Q correction: the loss equals a direct computation over the
    same draw with each held item's logit raised by its row's offset; a zero offset changes nothing."""
    generator = torch.Generator().manual_seed(4)
    item, valid = random_windows(4, windows=4, length=8)
    rows = valid[:, 1:] & (item[:, 1:] >= FIRST_ITEM_ID)
    window, position = rows.nonzero(as_tuple=True)
    histories = query_histories(item, valid, window, position)
    table, query = torch.randn(14, 8, generator=generator), torch.randn(len(window), 8, generator=generator)
    offset = torch.randn(len(window), generator=generator)
    positives = item[:, 1:][rows]
    config = NextItemConfig(loss="sampled", negatives="popularity", num_negatives=30)
    sampler = NegativeSampler(torch.arange(14), config)
    draw = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    plain = sampled_softmax_loss(query, positives, table, config, 1.0, sampler, draw())
    zero = RepeatOffsets(offset=torch.zeros(len(window)), histories=histories)
    assert torch.allclose(sampled_softmax_loss(query, positives, table, config, 1.0, sampler, draw(), zero), plain)
    got = sampled_softmax_loss(query, positives, table, config, 1.0, sampler, draw(), RepeatOffsets(offset, histories))
    negatives = sampler.draw(draw())
    held = python_histories(item, valid, rows)
    correction = lambda j: sampler.log_probabilities[j] + math.log(30)  # noqa: E731
    expected = []
    for i, positive in enumerate(positives.tolist()):
        logit = lambda j: query[i] @ table[j] - correction(j) + offset[i] * (j in held[i])  # noqa: E731
        row = torch.stack([logit(positive), *[logit(j) for j in negatives.tolist() if j != positive]])
        expected.append(-torch.log_softmax(row, 0)[0])
    assert not torch.allclose(got, plain) and torch.allclose(got, torch.stack(expected).mean(), atol=1e-5)


def next_item_batch(item: torch.Tensor) -> SequenceBatch:
    windows, length = item.shape
    zeros = torch.zeros(windows, length, dtype=torch.long)
    valid = item > 0
    return SequenceBatch(
        item=item,
        categorical={},
        labels=torch.zeros(windows, length, 0),
        label_mask=torch.zeros(windows, length, 0, dtype=torch.bool),
        probabilities=torch.zeros(windows, length, 0, dtype=torch.float64),
        action=zeros,
        timestamp=zeros,
        has_time=torch.zeros(windows, length, dtype=torch.bool),
        tz_offset_minutes=zeros,
        second_of_day=zeros,
        day_of_week=zeros,
        impression=zeros,
        row=zeros,
        target=valid,
        valid=valid,
        lengths=valid.sum(1),
        users=[str(w) for w in range(windows)],
    )


@pytest.mark.parametrize("loss", ["full", "sampled"])
@pytest.mark.parametrize("repeating", [False, True])
def test_training_learns_whether_targets_repeat(loss: str, repeating: bool) -> None:
    """Sequences whose next item never repeats teach the gate a negative offset; sequences that
    alternate between two items teach it a positive one. Either loss, the gate starting at zero."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    vocab = 40
    if repeating:
        rows = [[a, b] * 5 for a, b in (rng.choice(np.arange(2, vocab), 2, replace=False) for _ in range(32))]
    else:
        rows = [rng.choice(np.arange(2, vocab), 10, replace=False) for _ in range(32)]
    batch = next_item_batch(torch.tensor(np.array(rows), dtype=torch.long))
    head = {"loss": loss, "repeat_bias": True, "num_negatives": 64, "negatives": "uniform"}
    model = Ranker(ModelConfig(item_vocab_size=vocab, action_vocab_size=2, d_model=16, heads=2, layers=1, dropout=0.0, next_item=head))
    sampler = NegativeSampler(torch.ones(vocab, dtype=torch.long), model.config.next_item) if loss == "sampled" else None
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for step in range(40):
        total, _ = compute_loss(model, model, batch, step, torch.zeros(0, dtype=torch.long), sampler=sampler)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
    with torch.no_grad():
        _, _, _, offsets = model(*batch_inputs(batch))
    mean = float(offsets[batch.valid].mean())
    assert (mean > 1.0) if repeating else (mean < -1.0)


def test_retrieval_scores_add_the_offset_in_logit_units_under_cosine() -> None:
    """Training adds the offset to similarity / τ; retrieval must rank by the same logits."""
    from rotorec.training.retrieval import RankerScorer

    torch.manual_seed(1)
    vocab = 12
    head = {"similarity": "cosine", "temperature": 0.1, "repeat_bias": True}
    model = Ranker(ModelConfig(item_vocab_size=vocab, action_vocab_size=2, d_model=16, heads=2, layers=1, dropout=0.0, next_item=head))
    with torch.no_grad():
        model.repeat_gate.bias.fill_(4.0)
    model.eval()
    item, valid = random_windows(2, windows=3, length=6, vocab=vocab)
    batch = next_item_batch(item)
    rows = valid[:, 1:]
    with torch.no_grad():
        scores = RankerScorer(model).next_item_scores(batch, rows)
        hidden, _, queries, offsets = model(*batch_inputs(batch))
        window, position = rows.nonzero(as_tuple=True)
        held = history_columns(query_histories(item, valid, window, position), vocab - FIRST_ITEM_ID)
        catalogue = model.catalogue_embeddings()[FIRST_ITEM_ID:]
        logits = queries[:, :-1][rows] @ catalogue.T / 0.1 + offsets[:, :-1][rows, None] * held
    assert held.any() and torch.allclose(scores, logits, atol=1e-4)
