"""`benchmarks/mixer_tasks.py`: its task generators against independent computations, its
model wrapper's causality, and its smoke scale end to end, so the benchmark cannot rot.

Nothing learned is asserted: the smoke scale trains a handful of steps."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))  # benchmark scripts import their helpers from beside them
import mixer_tasks  # noqa: E402


def _cycle_parity(permutation: tuple[int, ...]) -> int:
    """Parity from the cycle decomposition (n − cycles), not from inversions as the benchmark does."""
    seen, cycles = set(), 0
    for start in range(len(permutation)):
        if start not in seen:
            cycles += 1
            point = start
            while point not in seen:
                seen.add(point)
                point = permutation[point]
    return (len(permutation) - cycles) % 2


def _product(elements: list[tuple[int, ...]]) -> tuple[int, ...]:
    """g_t ∘ … ∘ g_1 as a map: where each point lands after g_1, then g_2, …, then g_t."""
    landing = list(range(5))
    for g in elements:
        landing = [g[point] for point in landing]
    return tuple(landing)


def test_a5_is_sixty_even_permutations_closed_under_composition() -> None:
    group = mixer_tasks.alternating_group()
    assert len(group) == len(set(group)) == 60
    assert all(_cycle_parity(p) == 0 for p in group)
    assert tuple(range(5)) in group
    members = set(group)
    assert all(tuple(a[b[i]] for i in range(5)) in members for a in group for b in group)


def test_multiplication_table_is_a_latin_square_of_a_non_abelian_group() -> None:
    table = mixer_tasks.multiplication_table(mixer_tasks.alternating_group())
    every = torch.arange(60)
    assert all(torch.equal(row.sort().values, every) for row in table)
    assert all(torch.equal(column.sort().values, every) for column in table.T)
    assert not torch.equal(table, table.T)


def test_permutation_features_are_the_permutation_matrices_of_the_table() -> None:
    """M(a ∘ b) = M(b) M(a) for M(p)[i, p(i)] = 1: the features and the table agree."""
    group = mixer_tasks.alternating_group()
    matrices = mixer_tasks.permutation_features(group).view(60, 5, 5)
    assert torch.equal(matrices.sum(1), torch.ones(60, 5)) and torch.equal(matrices.sum(2), torch.ones(60, 5))
    table = mixer_tasks.multiplication_table(group)
    assert torch.equal(matrices[table], matrices.unsqueeze(0) @ matrices.unsqueeze(1))  # [a, b]: M(b) M(a)


def test_state_tracking_labels_are_the_running_products() -> None:
    group = mixer_tasks.alternating_group()
    sample = mixer_tasks.state_tracking_sampler(mixer_tasks.multiplication_table(group))
    tokens, labels = sample(6, 20, torch.Generator().manual_seed(0))
    for row, label_row in zip(tokens.tolist(), labels.tolist()):
        elements = [group[i] for i in row]
        assert label_row == [group.index(_product(elements[: t + 1])) for t in range(len(row))]


def test_selective_copy_targets_are_the_data_tokens_in_order() -> None:
    length, count, vocab = 300, 8, 5
    tokens, targets = mixer_tasks.selective_copy_batch(16, length, count, vocab, torch.Generator().manual_seed(1))
    for row, target in zip(tokens.tolist(), targets.tolist()):
        data = [token for token in row[:-count] if token != mixer_tasks.NOISE]
        assert len(data) == count
        assert all(mixer_tasks.FIRST_DATA <= token < mixer_tasks.FIRST_DATA + vocab for token in data)
        assert row[-count:] == [mixer_tasks.MARKER] * count
        assert target[-count:] == data
        assert target[:-count] == [mixer_tasks.IGNORE] * (length - count)


@pytest.mark.parametrize("kind", ["rotrnn", "attention"])
def test_the_output_at_p_reads_token_p_and_nothing_after_it(kind: str) -> None:
    """The wrapper's context gives every token its own slot: later tokens never reach earlier
    outputs, and a token's own content reaches its output (what both tasks rely on). FP-RNN is
    left out: its adaptive stopping couples positions through the iteration count."""
    scale = mixer_tasks.SCALES["smoke"]
    torch.manual_seed(0)
    model = mixer_tasks.TaskModel(mixer_tasks.model_config(kind, scale, 12), torch.eye(7), classes=7).eval()
    tokens = torch.randint(0, 7, (3, 12), generator=torch.Generator().manual_seed(2))
    changed = tokens.clone()
    changed[:, 5:] = (changed[:, 5:] + 1) % 7
    with torch.no_grad():
        before, after = model(tokens), model(changed)
    assert torch.allclose(before[:, :5], after[:, :5], atol=1e-6)
    assert (before[:, 5] - after[:, 5]).abs().amax() > 1e-4


@pytest.mark.slow
def test_smoke_scale_runs_every_model_and_writes_its_report(tmp_path: Path) -> None:
    report = tmp_path / "mixer_tasks.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "mixer_tasks.py"), "--scale", "smoke", "--seeds", "0", "1", "--json", str(report)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "| state_tracking | fprnn |" in done.stdout and "| selective_copy | rotrnn |" in done.stdout
    written = json.loads(report.read_text())
    assert written["scale"] == "smoke" and written["threads"] == 1 and written["date"] and "commit" in written
    assert written["machine"].endswith(f"{os.cpu_count()} cores")
    plan = {("state_tracking", kind) for kind in mixer_tasks.MODELS} | {
        ("selective_copy", kind) for kind in mixer_tasks.SCALES["smoke"].copy_models
    }
    assert {(r["task"], r["model"]) for r in written["results"]} == plan
    assert len(written["results"]) == 2 * len(plan)
    for row in written["results"]:
        scores = [value for key, value in row.items() if "accuracy@" in key]
        assert scores and all(math.isfinite(value) and 0.0 <= value <= 1.0 for value in scores), row
    tracking = [r for r in written["results"] if r["task"] == "state_tracking"]
    assert all({"accuracy@8", "accuracy@16"} <= set(r) for r in tracking)  # the training length and twice it
