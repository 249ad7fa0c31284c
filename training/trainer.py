"""`rotorec train`: fit the ranker on prepared sequences, with checkpoints and early stopping.

Run folder:
    model.safetensors    best weights by validation (weights only)
    manifest.json        configs, data fingerprints, package version, git commit, metrics, files
    schema.json vocab/   the prepared data's schema and vocabularies (the service maps ids with them)
    checkpoint/          the latest full state (weights, optimizer, schedule, RNG) for --resume
    train_log.jsonl      one JSON line per logged step and per evaluation
    tensorboard/         the same numbers as TensorBoard scalars (train/*, valid/*)

Batch order is a pure function of (seed, step) and the RNG state is checkpointed, so a run that
is killed and resumed ends with the same weights as one that never stopped (on CPU).
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from rotorec.features.artifacts import FeatureSchema, item_first_seen
from rotorec.features.dataset import SequenceBatch, SequenceDataset
from rotorec.features.files import file_digest
from rotorec.model.inputs import batch_inputs, encode_batch
from rotorec.model.losses import FIRST_ITEM_ID, NegativeSampler, full_softmax_loss, sampled_softmax_loss, task_loss
from rotorec.model.ranker import Ranker
from rotorec.model.repeats import RepeatOffsets
from rotorec import __version__
from rotorec.training.batches import Distributed, TrainingBatches
from rotorec.training.checkpoint import (
    MODEL_FILE,
    STATE_FILE,
    load_checkpoint,
    read_state,
    replace_folder,
    save_checkpoint,
    write_json_atomic,
)
from rotorec.training.config import ConfigError, RunConfig
from rotorec.training.journal import TrainingJournal
from rotorec.training.metrics import CalibrationAccumulator
from rotorec.training.resume import CONTRACT_KEY, check_resume, run_contract
from rotorec.training.retrieval import retrieval_report

log = logging.getLogger(__name__)
MANIFEST_FILE = "manifest.json"
ARTIFACT_FORMAT = 1


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(choice: str) -> torch.device:
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: cuda was requested but no GPU is available")
    return torch.device(choice)


def parameter_groups(model: Ranker, weight_decay: float) -> list[dict]:
    """Decay only matrix weights of linear layers: never ω_s, λ, biases, norms or embeddings."""
    decay, keep = [], []
    for module in model.modules():
        for name, parameter in module.named_parameters(recurse=False):
            (decay if isinstance(module, torch.nn.Linear) and name == "weight" else keep).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": keep, "weight_decay": 0.0}]


def learning_rate_factor(schedule: str, warmup: int, total: int, floor: float):
    """Linear warmup, then either a constant rate or a cosine decay to lr·floor at `total`."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def cpu_has_native_bf16() -> bool:
    return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def use_autocast(device: torch.device, gpu_bf16: bool, cpu_bf16: bool) -> bool:
    """bf16 matmuls where they are fast: on CUDA, and (opt-in) on CPUs with native bf16, where the
    catalogue softmax's matmuls run several times faster than fp32. Without native support, bf16 on
    CPU is emulated and slower than fp32, so the request is declined with a warning."""
    if device.type == "cuda":
        return gpu_bf16
    if not cpu_bf16:
        return False
    if not cpu_has_native_bf16():
        log.warning("train.cpu_bf16: this CPU has no native bf16; training in fp32")
        return False
    return True


def task_columns(schema: FeatureSchema, tasks: list[str]) -> torch.Tensor:
    """Positions of the model's tasks among the data's label columns (a model may use a subset)."""
    return torch.tensor([schema.tasks.index(task) for task in tasks], dtype=torch.long)


def compute_loss(
    network: torch.nn.Module,
    model: Ranker,
    batch: SequenceBatch,
    step_seed: int,
    columns: torch.Tensor,
    distributed: Distributed | None = None,
    sampler: NegativeSampler | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The training objective; `network` is the model itself or its DDP wrapper."""
    share = distributed.share if distributed is not None else (lambda loss, _count: loss)
    _, logits, queries, repeat_offsets = network(*batch_inputs(batch))
    total = batch.labels.new_zeros(())
    parts: dict[str, float] = {}
    weight = batch.target & batch.valid
    if logits is not None:
        labels, known = batch.labels[..., columns], batch.label_mask[..., columns]
        loss, per_task = task_loss(logits, labels, known, weight)
        total = total + share(loss, (known & weight.unsqueeze(-1)).sum())
        parts.update({f"bce_{t}": float(v) for t, v in zip(model.config.tasks, per_task.detach())})
    if queries is not None:
        # Position p predicts the item of event p + 1 when that event is a target of this split.
        rows = weight[:, 1:] & batch.valid[:, :-1] & (batch.item[:, 1:] >= FIRST_ITEM_ID)
        query, positives = queries[:, :-1][rows], batch.item[:, 1:][rows]
        head = model.config.next_item
        repeats = None if repeat_offsets is None else RepeatOffsets.at(repeat_offsets, batch.item, batch.valid, rows)
        if head.loss == "full":
            logits = query @ model.catalogue_embeddings()[FIRST_ITEM_ID:].T
            logits = logits if model.next_item_scale == 1.0 else logits * model.next_item_scale
            if repeats is not None:
                logits = repeats.add_to_catalogue(logits)
            loss = full_softmax_loss(logits, positives)
        else:
            generator = torch.Generator(device=queries.device).manual_seed(step_seed)
            loss = sampled_softmax_loss(
                query, positives, model.catalogue_embeddings(), head, model.next_item_scale, sampler, generator, repeats
            )
        total = total + head.weight * share(loss, rows.sum())
        parts["next_item"] = float(loss.detach())
    return total, parts


def selection_metric(model: Ranker, schema: FeatureSchema) -> str:
    """Early stopping watches NE for impression logs, NDCG@10 for next-item models
    (docs/evaluation_details.md, "Model selection")."""
    if model.has_next_item and (model.task_head is None or schema.split.protocol == "loo"):
        return "ndcg@10"
    return "ne_mean"


def validation_metrics(model: Ranker, dataset: SequenceDataset, device: torch.device, batch_size: int) -> dict[str, float]:
    columns = task_columns(dataset.schema, model.config.tasks)
    metrics = validation_ne(model, dataset, device, batch_size, columns) if model.task_head is not None else {}
    if model.has_next_item:
        report = retrieval_report(model, dataset)
        metrics.update({k: report[k] for k in ("ndcg@10", "hr@10", "mrr")})
    model.train()
    return metrics


def _better(metric: str, value: float, best: float | None) -> bool:
    if best is None or not np.isfinite(best):
        return bool(np.isfinite(value))
    return value > best if metric.startswith(("ndcg", "hr", "mrr")) else value < best


@torch.inference_mode()
def validation_ne(
    model: Ranker, dataset: SequenceDataset, device: torch.device, batch_size: int, columns: torch.Tensor
) -> dict[str, float]:
    """Per-task NE on the split's targets, and their mean (the early-stopping criterion)."""
    model.eval()
    accumulators = {task: CalibrationAccumulator() for task in model.config.tasks}
    for batch in dataset.in_order(batch_size, device):
        hidden = encode_batch(model, batch).hidden
        logits = model.task_logits(hidden).float()
        for k, task in enumerate(model.config.tasks):
            column = int(columns[k])
            chosen = batch.target & batch.valid & batch.label_mask[..., column]
            accumulators[task].update(logits[..., k][chosen].cpu().numpy(), batch.labels[..., column][chosen].cpu().numpy())
    result = {f"ne_{task}": acc.compute()["ne"] for task, acc in accumulators.items()}
    result["ne_mean"] = float(np.nanmean(list(result.values()))) if result else float("nan")
    return result


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def train(data_dir: str | Path, config: RunConfig, out_dir: str | Path, resume: bool = False, progress: bool = True) -> dict:
    data, out = Path(data_dir), Path(out_dir)
    schema = FeatureSchema.load(data)
    model_config = config.model_config_for(schema)
    loop, optim = config.train, config.optim
    device = pick_device(loop.device)
    distributed = Distributed.from_env()
    leader = distributed is None or distributed.rank == 0
    checkpoint_dir = out / "checkpoint"
    if leader and out.exists() and not resume and any(out.iterdir()):
        raise ConfigError(f"{out}: run folder is not empty (use --resume to continue it)")
    contract = run_contract(config, model_config, data)
    resuming = resume and (checkpoint_dir / STATE_FILE).exists()
    if resuming:  # before any process group or tensor: a run resumed differently fails in one line
        check_resume(read_state(checkpoint_dir).get(CONTRACT_KEY), contract, out, data)
    if distributed is not None:
        if device.type == "cuda":
            device = torch.device("cuda", distributed.local_rank)
            torch.cuda.set_device(device)
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(loop.seed)

    batches, valid_set = TrainingBatches(data, loop.batch_size, loop.seed, distributed), SequenceDataset(data, "valid")
    model = Ranker(model_config).to(device)
    if model.item_age is not None:
        model.item_age.set_first_seen(item_first_seen(data))
    if model.cold_items is not None:
        model.cold_items.set_trained(batches.items_present())
    optimizer = torch.optim.AdamW(parameter_groups(model, optim.weight_decay), lr=optim.lr, betas=optim.betas)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, learning_rate_factor(optim.schedule, optim.warmup_steps, loop.max_steps, optim.min_lr_ratio)
    )
    head = model_config.next_item
    sampler = None
    if head is not None and head.loss == "sampled" and head.negatives != "in_batch":
        sampler = NegativeSampler(batches.target_item_counts(), head).to(device)
    watched = selection_metric(model, schema)
    start, best, stale = 0, {"metric": watched, watched: None, "step": -1}, 0
    if resuming:
        state = load_checkpoint(checkpoint_dir, model, optimizer, scheduler)
        start, best, stale = state["step"], state["best"], state["stale"]
        log.info("resumed", extra={"run": str(out), "step": start})
    autocast = use_autocast(device, loop.bf16, loop.cpu_bf16)
    columns = task_columns(schema, model_config.tasks).to(device)
    network: torch.nn.Module = model
    if distributed is not None:
        # Parameters are broadcast from rank 0; dropout draws differ per rank, as they should.
        network = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        torch.manual_seed(loop.seed * 1_000_003 + distributed.rank + 1)
    journal = TrainingJournal(out, loop.tensorboard) if leader else None
    model.train()
    bar = tqdm(total=loop.max_steps, initial=start, desc="train", unit="step", disable=None if progress and leader else True)
    window_start, window_examples, window_tokens = time.perf_counter(), 0, 0
    step = start
    try:
        while step < loop.max_steps and stale < loop.patience:
            batch = batches.batch(step).to(device)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast):
                loss, parts = compute_loss(network, model, batch, loop.seed * 1_000_003 + step, columns, distributed, sampler)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), optim.grad_clip)
            optimizer.step()
            scheduler.step()
            step += 1
            window_examples += len(batch.users)
            window_tokens += int(batch.valid.sum())
            bar.update(1)
            if step % loop.log_every == 0 or step == loop.max_steps:
                elapsed = time.perf_counter() - window_start
                global_loss = loss.detach().clone()
                if distributed is not None:  # the mean of the shared losses is the global-batch loss
                    torch.distributed.all_reduce(global_loss)
                    global_loss /= distributed.world
                record = {
                    "loss": float(global_loss),
                    **parts,
                    "lr": scheduler.get_last_lr()[0],
                    "examples_per_s": window_examples / elapsed,
                    "tokens_per_s": window_tokens / elapsed,
                }
                if journal is not None:
                    journal.step(step, record)
                bar.set_postfix(loss=f"{float(loss.detach()):.4f}", tok_s=f"{record['tokens_per_s']:.0f}")
                window_start, window_examples, window_tokens = time.perf_counter(), 0, 0
            if step % loop.eval_every == 0 or step == loop.max_steps:
                metrics = validation_metrics(model, valid_set, device, loop.eval_batch_size)
                improved = _better(watched, metrics[watched], best[watched])
                stale = 0 if improved else stale + 1
                if improved:
                    best = {"metric": watched, **metrics, "step": step}
                    if leader:
                        _save_weights(model, out)
                if journal is not None:
                    journal.validation(step, metrics, best["step"])
            if leader and (step % loop.checkpoint_every == 0 or step == loop.max_steps or stale >= loop.patience):
                save_checkpoint(checkpoint_dir, model, optimizer, scheduler, step, {"best": best, "stale": stale, CONTRACT_KEY: contract})
    finally:
        bar.close()
        if journal is not None:
            journal.close()
    if distributed is not None:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
        if not leader:
            return {"steps": step, "metrics": {"validation": best}}
    if best["step"] < 0:  # never a finite validation value: keep the last weights
        _save_weights(model, out)
    return _finish(out, data, schema, config, model_config, best, step, device)


def _save_weights(model: Ranker, out: Path) -> None:
    staging = out / f".{MODEL_FILE}.partial"
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, staging)
    staging.replace(out / MODEL_FILE)


def _finish(
    out: Path, data: Path, schema: FeatureSchema, config: RunConfig, model_config, best: dict, step: int, device: torch.device
) -> dict:
    """Copy the data contract beside the weights and write the manifest last."""
    vocab = out / "vocab"
    staging = out / ".vocab.partial"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(data / "vocab", staging)
    replace_folder(staging, vocab)
    shutil.copy2(data / "schema.json", out / "schema.json")
    shutil.copy2(data / "items.parquet", out / "items.parquet")
    stats = json.loads((data / "stats.json").read_text(encoding="utf-8"))
    files = [out / MODEL_FILE, out / "schema.json", out / "items.parquet", *sorted(vocab.iterdir())]
    manifest = {
        "artifact_format": ARTIFACT_FORMAT,
        "name": "rotorec",
        "version": time.strftime("%Y%m%d-%H%M%S", time.gmtime()),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "package_version": __version__,
        "git_commit": _git_commit(),
        "device": str(device),
        "model": model_config.model_dump(mode="json"),
        "run": config.model_dump(mode="json"),
        "data": {
            "folder": str(data.resolve()),
            "schema_sha256": schema.fingerprint(),
            "stats": {k: stats.get(k) for k in ("users", "items", "events", "quarantined", "split")},
        },
        "metrics": {"validation": best},
        "steps": step,
        "files": {str(p.relative_to(out)): file_digest(p) for p in files},
    }
    write_json_atomic(out / MANIFEST_FILE, manifest)
    log.info("trained", extra={"run": str(out), "steps": step, "best_step": best.get("step")})
    return manifest
