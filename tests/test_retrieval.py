"""Next-item training and full-catalogue evaluation on a leave-last-out split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, ranks_against, run_rotorec
from rotorec.features.dataset import SequenceDataset
from rotorec.model.inputs import batch_time
from rotorec.training.retrieval import FIRST_ITEM_ID, next_item_ranks
from rotorec.training.run import load_run

pytestmark = pytest.mark.slow  # every test uses a run trained by a `rotorec train` subprocess (module fixture)


@pytest.fixture(scope="module")
def next_item_run(tiny_feed: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("loo")
    run_rotorec("prepare", "--input", str(tiny_feed), "--out", str(root / "data"), "--split", "loo", "--max-len", "30", "--no-progress")
    run_rotorec(
        "train",
        "--data",
        str(root / "data"),
        "--config",
        str(REPO / "configs" / "movielens_next_item.yaml"),
        "--out",
        str(root / "run"),
        "--no-progress",
        "--set",
        "model.tasks=[click]",
        "--set",
        "train.max_steps=20",
        "--set",
        "train.eval_every=10",
        "--set",
        "train.batch_size=16",
        "--set",
        "model.d_model=16",
        "--set",
        "model.next_item.repeat_bias=true",
    )
    return root / "run", root / "data"


@pytest.mark.parametrize("gate_bias", [None, 50.0])
def test_ranks_match_a_direct_full_catalogue_computation(next_item_run, gate_bias: float | None) -> None:
    """As trained, and with the repeat gate's bias forced to +50 (history items first), so the
    comparison fails if retrieval left the gate out."""
    run_dir, data = next_item_run
    run = load_run(run_dir)
    dataset = SequenceDataset(data, "test")
    trained_ranks, _ = next_item_ranks(run.model, dataset, batch_size=7)
    if gate_bias is not None:
        with torch.no_grad():
            run.model.repeat_gate.bias.fill_(gate_bias)
    ranks, users = next_item_ranks(run.model, dataset, batch_size=7)
    assert (gate_bias is None) or not np.array_equal(ranks, trained_ranks)
    expected = []
    with torch.inference_mode():
        batch = dataset.__getitems__(np.arange(len(dataset)))
        hidden = run.model.encode(batch.item, batch.categorical, batch.action, batch_time(batch), batch.valid).hidden
        catalogue = run.model.catalogue_embeddings()[FIRST_ITEM_ID:].numpy()
        for w in range(len(dataset)):
            for t in range(1, int(batch.lengths[w])):
                if batch.target[w, t]:
                    scores = run.model.next_item_embeddings(hidden[w, t - 1]).numpy() @ catalogue.T
                    held = {int(i) - FIRST_ITEM_ID for i in batch.item[w, :t] if i >= FIRST_ITEM_ID}
                    scores[sorted(held)] += float(run.model.repeat_offsets(hidden[w, t - 1]))  # the repeat gate's offset
                    target = int(batch.item[w, t]) - FIRST_ITEM_ID
                    is_target = np.zeros((1, len(scores)), dtype=bool)
                    is_target[0, target] = True
                    expected.append(int(ranks_against(scores[None], scores[[target]], is_target)[0]))
    assert ranks.tolist() == expected and len(users) == len(expected) > 0
    assert float(run.model.repeat_gate.weight.detach().abs().sum()) > 0  # the gate trained


def test_evaluate_reports_next_item_retrieval(next_item_run, tmp_path: Path) -> None:
    run_dir, data = next_item_run
    run_rotorec("evaluate", "--run", str(run_dir), "--data", str(data), "--out", str(tmp_path / "r"))
    retrieval = json.loads((tmp_path / "r" / "metrics.json").read_text())["test"]["next_item"]
    assert retrieval["catalogue_size"] == load_run(run_dir).schema.item_vocab_size - 2
    for key in ("hr@10", "hr@50", "hr@200", "ndcg@10", "ndcg@200", "mrr"):
        assert 0.0 <= retrieval[key] <= 1.0 and retrieval["ci95"][key][0] <= retrieval["ci95"][key][1]
    assert retrieval["hr@10"] <= retrieval["hr@50"] <= retrieval["hr@200"]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["metrics"]["validation"]["metric"] == "ndcg@10"
    # The popularity baseline sits beside the model, with the lift and its interval, in both files.
    popularity = retrieval["baseline"]
    assert popularity["model"] == "popularity"
    lift = popularity["lift"]["ndcg@10"]
    assert abs(lift["delta"] - (retrieval["ndcg@10"] - popularity["ndcg@10"])) < 1e-9
    assert lift["ci95"][0] <= lift["delta"] <= lift["ci95"][1]
    report = (tmp_path / "r" / "report.md").read_text()
    assert "Against the popularity baseline" in report and f"| ndcg@10 | {popularity['ndcg@10']:.4f} |" in report


def test_next_item_only_model_evaluates_with_either_catalogue_mode(next_item_run, tmp_path: Path) -> None:
    """A model with no task heads (Amazon sequences carry no labels) evaluates; `--exclude seen`
    never ranks a target worse than `none` does, and each mode is recorded."""
    _, data = next_item_run
    run_dir = tmp_path / "run"
    run_rotorec(
        "train",
        "--data",
        str(data),
        "--config",
        str(REPO / "configs" / "amazon_next_item.yaml"),
        "--out",
        str(run_dir),
        "--no-progress",
        "--set",
        "model.tasks=[]",
        "--set",
        "train.max_steps=10",
        "--set",
        "train.eval_every=5",
        "--set",
        "train.batch_size=16",
        "--set",
        "model.d_model=16",
        "--set",
        "model.siren.branches=[timestamp]",
    )
    reports = {}
    for mode in ("none", "seen"):
        run_rotorec("evaluate", "--run", str(run_dir), "--data", str(data), "--out", str(tmp_path / mode), "--exclude", mode)
        metrics = json.loads((tmp_path / mode / "metrics.json").read_text())["test"]
        assert set(metrics) == {"next_item"}
        reports[mode] = metrics["next_item"]
        assert reports[mode]["exclude"] == mode and reports[mode]["query_time"] == "last_event"
    assert reports["seen"]["mrr"] >= reports["none"]["mrr"] and reports["seen"]["hr@200"] >= reports["none"]["hr@200"]
