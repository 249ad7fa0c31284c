"""Training jobs: config errors, atomic pickle-free checkpoints, resume after SIGKILL."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import REPO, run_rotorec
from rotorec.training.config import ConfigError, load_run_config

TINY = REPO / "configs" / "tiny.yaml"
FAST = [
    "--set",
    "model.d_model=32",
    "--set",
    "model.siren.hidden=16",
    "--set",
    "train.batch_size=16",
    "--set",
    "train.eval_every=20",
    "--set",
    "train.checkpoint_every=5",
    "--set",
    "train.log_every=5",
]


def test_set_overrides_parse_as_yaml_and_unknown_keys_are_named(tmp_path: Path) -> None:
    config = load_run_config(TINY, ["model.mixers=[attention, attention]", "train.max_steps=7", "model.encoding=rope"])
    assert config.model["mixers"] == ["attention", "attention"] and config.train.max_steps == 7
    with pytest.raises(ConfigError, match=r"train\.max_stepz"):
        load_run_config(TINY, ["train.max_stepz=3"])
    with pytest.raises(ConfigError, match=r"model\.encodng"):
        load_run_config(TINY, ["model.encodng=rope"])
    with pytest.raises(ConfigError, match="key=value"):
        load_run_config(None, ["train.max_steps"])


@pytest.mark.slow
def test_bad_config_and_schema_mismatch_are_one_line_errors(tmp_path: Path, tiny_prepared: Path) -> None:
    result = run_rotorec(
        "train",
        "--data",
        str(tiny_prepared),
        "--config",
        str(TINY),
        "--out",
        str(tmp_path / "r"),
        "--set",
        "model.siren.categorical_fields=[genre]",
        "--set",
        "model.siren.branches=[categorical]",
        check=False,
    )
    assert result.returncode == 2 and "genre" in result.stderr and "Traceback" not in result.stderr


def _train_command(data: Path, out: Path, steps: int, resume: bool = False) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "rotorec",
        "--log-level",
        "WARNING",
        "train",
        "--data",
        str(data),
        "--config",
        str(TINY),
        "--out",
        str(out),
        "--no-progress",
        "--set",
        f"train.max_steps={steps}",
        *FAST,
    ]
    return command + (["--resume"] if resume else [])


@pytest.mark.slow
def test_resume_after_sigkill_ends_with_identical_weights(tmp_path: Path, tiny_prepared: Path) -> None:
    steps = 60
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(_train_command(tiny_prepared, tmp_path / "straight", steps), check=True, env=env, cwd=REPO, capture_output=True)
    victim = subprocess.Popen(
        _train_command(tiny_prepared, tmp_path / "killed", steps), env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    state = tmp_path / "killed" / "checkpoint" / "state.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and victim.poll() is None:
        if state.exists() and json.loads(state.read_text())["step"] >= 15:
            break
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_at = json.loads(state.read_text())["step"]
    assert killed_at < steps, "the job finished before it could be killed; the test proves nothing"
    subprocess.run(
        _train_command(tiny_prepared, tmp_path / "killed", steps, resume=True), check=True, env=env, cwd=REPO, capture_output=True
    )
    for name in ("checkpoint/model.safetensors", "model.safetensors"):
        straight, resumed = load_file(tmp_path / "straight" / name), load_file(tmp_path / "killed" / name)
        assert straight.keys() == resumed.keys()
        assert all(torch.equal(straight[k], resumed[k]) for k in straight), name
    manifest = json.loads((tmp_path / "killed" / "manifest.json").read_text())
    assert manifest["steps"] == steps and "model.safetensors" in manifest["files"]


@pytest.mark.slow
def test_resume_refuses_what_would_change_the_run_in_one_line(tmp_path: Path, tiny_prepared: Path) -> None:
    """Before, a changed seed or learning rate was taken silently (the manifest then recorded values
    never used), and another model or other data failed with a traceback."""
    out = tmp_path / "run"
    run_rotorec(
        "train",
        "--data",
        str(tiny_prepared),
        "--config",
        str(TINY),
        "--out",
        str(out),
        "--no-progress",
        "--set",
        "train.max_steps=10",
        *FAST,
    )
    state = out / "checkpoint" / "state.json"
    saved = state.read_bytes()

    def resume(data: Path, *overrides: str) -> subprocess.CompletedProcess:
        sets = [item for override in overrides for item in ("--set", override)]
        return run_rotorec(
            "train",
            "--data",
            str(data),
            "--config",
            str(TINY),
            "--out",
            str(out),
            "--no-progress",
            "--resume",
            "--set",
            "train.max_steps=10",
            *FAST,
            *sets,
            check=False,
        )

    other_data = tmp_path / "other"
    shutil.copytree(tiny_prepared, other_data)
    train_split = pq.read_table(other_data / "train.parquet")
    pq.write_table(train_split.slice(0, train_split.num_rows - 1), other_data / "train.parquet")
    for result, named in [
        (resume(tiny_prepared, "optim.lr=0.005", "train.seed=3"), ["optim.lr (0.002 -> 0.005)", "train.seed (0 -> 3)"]),
        (resume(tiny_prepared, "model.d_model=48"), ["model.d_model (32 -> 48)"]),
        (resume(other_data), ["other data", "train.parquet"]),
    ]:
        assert result.returncode == 2, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr, result.stderr
        assert all(text in result.stderr for text in named), result.stderr
    assert state.read_bytes() == saved  # nothing was trained or written

    # The documented exceptions (when to stop, early stopping, bookkeeping) may change.
    result = resume(tiny_prepared, "train.max_steps=14", "train.patience=9", "train.log_every=2")
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "manifest.json").read_text())["steps"] == 14


def test_a_checkpoint_without_a_recorded_contract_is_not_resumed(tmp_path: Path) -> None:
    from rotorec.training.resume import check_resume

    with pytest.raises(ConfigError, match="records no settings or data fingerprint"):
        check_resume(None, {"settings": {}, "data": {}}, tmp_path / "run", tmp_path / "data")


def test_a_setting_added_after_the_checkpoint_reads_as_its_default(tmp_path: Path) -> None:
    """A checkpoint from before `model.next_item.repeat_bias` existed resumes when the setting is
    at its default, and is refused when it is not."""
    from rotorec.training.resume import check_resume

    older = {"settings": {"model.next_item.loss": "full", "optim.lr": 0.001}, "data": {}}
    now = {"settings": {"model.next_item.loss": "full", "model.next_item.repeat_bias": False, "optim.lr": 0.001}, "data": {}}
    check_resume(older, now, tmp_path / "run", tmp_path / "data")
    now["settings"]["model.next_item.repeat_bias"] = True
    with pytest.raises(ConfigError, match=r"model.next_item.repeat_bias \(false -> true\)"):
        check_resume(older, now, tmp_path / "run", tmp_path / "data")


def test_checkpoint_write_failure_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    from rotorec.model.config import ModelConfig
    from rotorec.model.ranker import Ranker
    from rotorec.training import checkpoint

    model = Ranker(ModelConfig(item_vocab_size=10, action_vocab_size=4, tasks=["click"], d_model=8, heads=2))
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    folder = tmp_path / "checkpoint"
    checkpoint.save_checkpoint(folder, model, optimizer, scheduler, 1, {"best": {}, "stale": 0})
    original = load_file(folder / "model.safetensors")

    def broken(tensors, path):
        Path(path).write_bytes(b"half a file")
        raise OSError("disk full")

    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    monkeypatch.setattr(checkpoint, "save_file", broken)
    with pytest.raises(OSError):
        checkpoint.save_checkpoint(folder, model, optimizer, scheduler, 2, {"best": {}, "stale": 0})
    monkeypatch.undo()
    assert json.loads((folder / "state.json").read_text())["step"] == 1
    kept = load_file(folder / "model.safetensors")
    assert all(torch.equal(original[k], kept[k]) for k in original)

    def no_pickle(*args, **kwargs):
        raise AssertionError("torch.load (pickle) must not be used")

    monkeypatch.setattr(torch, "load", no_pickle)
    state = checkpoint.load_checkpoint(folder, model, optimizer, scheduler)
    assert state["step"] == 1
    assert {p.suffix for p in folder.iterdir()} <= {".safetensors", ".json"}


@pytest.fixture(scope="module")
def sharded_prepared(tiny_feed: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rotorec.features.adapters.events import events_source
    from rotorec.features.prepare import PrepareOptions, prepare

    out = tmp_path_factory.mktemp("sharded") / "data"
    prepare(events_source(tiny_feed), out, PrepareOptions(max_len=50, windows="all", shards=4, progress=False))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("sharded", [False, True], ids=["one-file", "sharded"])
def test_two_process_ddp_matches_one_process_on_the_same_global_batch(
    tmp_path: Path, tiny_prepared: Path, sharded_prepared: Path, sharded: bool
) -> None:
    """torchrun with 2 CPU processes (gloo) follows the single-process loss trajectory, whether
    every rank reads the whole split or (sharded) only its own shards."""
    common = [
        "--data",
        str(sharded_prepared if sharded else tiny_prepared),
        "--config",
        str(TINY),
        "--no-progress",
        "--set",
        "train.max_steps=8",
        "--set",
        "train.log_every=1",
        "--set",
        "train.eval_every=4",
        "--set",
        "model.dropout=0.0",
        "--set",
        "model.d_model=32",
        "--set",
        "train.batch_size=32",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [sys.executable, "-m", "rotorec", "--log-level", "WARNING", "train", *common, "--out", str(tmp_path / "single")],
        check=True,
        env=env,
        cwd=REPO,
        capture_output=True,
    )
    launched = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node=2",
            "-m",
            "rotorec",
            "--log-level",
            "WARNING",
            "train",
            *common,
            "--out",
            str(tmp_path / "ddp"),
        ],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert launched.returncode == 0, launched.stderr[-2000:]

    def read(folder: Path) -> list[float]:
        return [json.loads(line)["loss"] for line in (folder / "train_log.jsonl").read_text().splitlines() if '"loss"' in line]

    single, ddp = read(tmp_path / "single"), read(tmp_path / "ddp")
    assert len(single) == len(ddp) == 8
    assert max(abs(a - b) for a, b in zip(single, ddp)) < 1e-5
    assert single[-1] < single[0]  # it trains


@pytest.mark.slow
def test_recurrent_mixers_train_evaluate_and_reload(tmp_path: Path, tiny_prepared: Path) -> None:
    """RotRNN (time-conditioned) and FP-RNN layers train end to end through the CLI (validation
    NE falls as training goes on) and reload for evaluation."""
    out = tmp_path / "run"
    run_rotorec(
        "train",
        "--data",
        str(tiny_prepared),
        "--config",
        str(TINY),
        "--out",
        str(out),
        "--no-progress",
        "--set",
        "model.mixers=[rotrnn, fprnn]",
        "--set",
        "model.rotrnn={time_conditioned: true, heads: 4}",
        "--set",
        "model.fprnn={time_conditioned: true}",
        "--set",
        "train.max_steps=60",
        *FAST,
    )
    journal = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    validations = [line["validation"] for line in journal if "validation" in line]
    assert len(validations) >= 2 and validations[-1]["ne_mean"] < 0.8 * validations[0]["ne_mean"], validations
    # TensorBoard holds the journal's numbers, step for step.
    board = EventAccumulator(str(out / "tensorboard"))
    board.Reload()
    assert [(e.step, pytest.approx(e.value, rel=1e-6)) for e in board.Scalars("train/loss")] == [
        (line["step"], line["loss"]) for line in journal if "loss" in line
    ]
    assert [e.value for e in board.Scalars("valid/ne_mean")] == pytest.approx([v["ne_mean"] for v in validations], rel=1e-6)
    run_rotorec("evaluate", "--run", str(out), "--data", str(tiny_prepared), "--out", str(tmp_path / "report"))
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["test"]


def test_cpu_bf16_is_used_only_where_asked_for_and_native(monkeypatch, caplog) -> None:
    from rotorec.training import trainer

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(trainer, "cpu_has_native_bf16", lambda: True)
    assert trainer.use_autocast(cpu, True, True) and not trainer.use_autocast(cpu, True, False)
    assert trainer.use_autocast(cuda, True, False) and not trainer.use_autocast(cuda, False, True)
    monkeypatch.setattr(trainer, "cpu_has_native_bf16", lambda: False)
    with caplog.at_level("WARNING", logger="rotorec.training.trainer"):
        assert not trainer.use_autocast(cpu, True, True)
    assert "no native bf16" in caplog.text


def test_cpu_bf16_loss_and_gradients_follow_fp32(tiny_prepared: Path) -> None:
    """The bf16 fast path against the fp32 reference on one batch of the next-item + task objective:
    loss within 1 %, every parameter's gradient with cosine ≥ 0.99 to the fp32 one (bf16 keeps 8
    bits of mantissa; the softmax and BCE run in fp32)."""
    from rotorec.features.artifacts import FeatureSchema
    from rotorec.features.dataset import SequenceDataset
    from rotorec.model.ranker import Ranker
    from rotorec.training.trainer import compute_loss, task_columns

    schema = FeatureSchema.load(tiny_prepared)
    config = load_run_config(TINY, ["model.next_item={loss: full, similarity: dot}", "model.dropout=0.0"])
    model_config = config.model_config_for(schema)
    torch.manual_seed(0)
    model = Ranker(model_config)
    batch = SequenceDataset(tiny_prepared, "train").__getitems__(list(range(16)))
    columns = task_columns(schema, model_config.tasks)

    def loss_and_grads(bf16: bool) -> tuple[float, list[torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss, _ = compute_loss(model, model, batch, 0, columns)
        loss.backward()
        return float(loss.detach()), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    reference_loss, reference = loss_and_grads(False)
    fast_loss, fast = loss_and_grads(True)
    assert fast_loss == pytest.approx(reference_loss, rel=1e-2)
    assert len(fast) == len(reference)
    for a, b in zip(fast, reference):
        if b.norm() > 1e-8:
            assert torch.nn.functional.cosine_similarity(a.flatten().float(), b.flatten(), dim=0) >= 0.99
