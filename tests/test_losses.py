"""Training objectives against direct computations."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from model.config import NextItemConfig
from model.losses import sampled_softmax_loss, task_loss


def test_task_loss_averages_only_known_selected_entries() -> None:
    logits = torch.tensor([[[0.0, 2.0], [1.0, -1.0], [5.0, 5.0]]])
    labels = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])
    known = torch.tensor([[[True, False], [True, True], [True, True]]])
    selected = torch.tensor([[True, True, False]])  # the third position is not a target
    loss, per_task = task_loss(logits, labels, known, selected)
    entries = [F.softplus(-torch.tensor(0.0)), F.softplus(torch.tensor(1.0)), F.softplus(torch.tensor(1.0))]
    assert math.isclose(loss.item(), sum(e.item() for e in entries) / 3, rel_tol=1e-6)
    assert math.isclose(per_task[0].item(), (entries[0] + entries[1]).item() / 2, rel_tol=1e-6)
    assert math.isclose(per_task[1].item(), entries[2].item(), rel_tol=1e-6)


def test_in_batch_softmax_matches_a_direct_cross_entropy() -> None:
    generator = torch.Generator().manual_seed(0)
    table = F.normalize(torch.randn(20, 8, generator=generator), dim=-1)
    query = F.normalize(torch.randn(4, 8, generator=generator), dim=-1)
    positives = torch.tensor([3, 7, 3, 11])  # a repeated positive must not count as its own negative
    config = NextItemConfig(negatives="in_batch", temperature=0.1)
    loss = sampled_softmax_loss(query, positives, table, config)
    logits = query @ table[positives].T / 0.1
    expected = []
    for i in range(4):
        others = [logits[i, j] for j in range(4) if positives[j] != positives[i]]
        row = torch.stack([logits[i, i], *others])
        expected.append(-torch.log_softmax(row, 0)[0])
    assert torch.allclose(loss, torch.stack(expected).mean(), atol=1e-6)


def test_uniform_negatives_never_sample_pad_or_oov_and_learn() -> None:
    table = torch.nn.Parameter(F.normalize(torch.randn(50, 8), dim=-1))
    query = torch.nn.Parameter(F.normalize(torch.randn(6, 8), dim=-1))
    loss = sampled_softmax_loss(query, torch.tensor([2, 3, 4, 5, 6, 7]), table, NextItemConfig(num_negatives=500),
                                torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and query.grad.abs().sum() > 0
    assert table.grad[:2].abs().sum() == 0  # PAD and OOV rows were never drawn
