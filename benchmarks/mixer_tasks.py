"""The recurrent mixers' headline claims on synthetic tasks, at a scale one CPU core can train.

1. State tracking (Fixed-Point RNN, arXiv 2503.10799): a dense, input-dependent transition can
   compose permutations, which a diagonal linear RNN cannot. Tokens are random elements of A5;
   the label at position t is the running product g_t ∘ … ∘ g_1. A5 rather than S5: it is the
   smallest non-solvable group, so its word problem is already beyond diagonal linear RNNs
   (arXiv 2404.08819), while its 60 × 60 table is a quarter of S5's, which matters when the
   whole run gets a few CPU minutes. Tokens enter as their permutation matrices (see
   `permutation_features`). Compared: FP-RNN layers; RotRNN layers, the diagonal baseline
   (its transition is a fixed complex-diagonal γe^{iθ}, not even input-dependent;
   FpRnnConfig has no switch that turns the Householder mixing off); attention with ordinal
   RoPE. Accuracy is measured at the training length and at twice it.
2. Long-range memory (RotRNN, arXiv 2407.07239): selective copy (arXiv 2312.00752) over
   sequences of at least 1,000 tokens, mostly noise, with K data tokens at random positions
   and K markers at the end, at which the model must emit the data tokens in order.

Every model is token embedding → N pre-norm blocks (model.ranker.Block: mixer and FFN
residuals) → LayerNorm → linear classifier, with the same d_model and depth. Mixers are label
safe: the output at p sees token p and the tokens before it, which is all either task needs;
the action input is the constant id 1. Training uses freshly sampled batches; evaluation uses
sequences drawn from a generator the training never touches.

    python benchmarks/mixer_tasks.py [--scale {smoke,cpu}] [--seeds 0 1 2] [--json benchmarks/out/mixer_tasks.json]

`smoke` runs in seconds (the test); `cpu` takes about a quarter of an hour on one core, of which
selective copy gets one seed and 100 steps: far too few to learn it, see RESULTS.md.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from provenance import current_commit, write_report  # benchmarks/provenance.py, beside this script
from rotorec.model.config import ModelConfig
from rotorec.model.context import MixerContext
from rotorec.model.encodings import build_encoding
from rotorec.model.inputs import TimeInputs
from rotorec.model.ranker import Block

IGNORE = -100
"""Target of positions that are not scored (cross-entropy's ignore_index)."""
NOISE, MARKER, FIRST_DATA = 0, 1, 2
"""Selective-copy token ids; data tokens are FIRST_DATA … FIRST_DATA + vocab − 1."""
MODELS = ("fprnn", "rotrnn", "attention")
SOLVED = 0.9
"""Per-position accuracy at which a position counts as solved (the claim's bar)."""
EVAL_SEED_OFFSET = 1_000_003
"""Evaluation generators are seeded far from the training ones, so held-out batches are fresh."""

Sampler = Callable[[int, int, torch.Generator], tuple[torch.Tensor, torch.Tensor]]
"""(batch size, length, generator) -> (tokens [B, S], targets [B, S] with IGNORE where unscored)."""


@dataclass(frozen=True)
class Scale:
    d_model: int
    layers: int
    heads: int  # attention heads (head_dim = d_model / heads)
    rotrnn_heads: int
    rotrnn_state: int
    fprnn_state: int
    fprnn_iterations: int  # ℓ_max in training and evaluation alike
    lr: float
    eval_sequences: int
    eval_batch: int
    tracking_length: int
    tracking_batch: int
    tracking_steps: int
    copy_length: int
    copy_tokens: int
    copy_vocab: int
    copy_batch: int
    copy_steps: int
    copy_seeds: int  # at most this many of the seeds (attention at length 1,024 is the costliest run)
    copy_models: tuple[str, ...]


SCALES = {
    "smoke": Scale(
        d_model=16,
        layers=1,
        heads=2,
        rotrnn_heads=2,
        rotrnn_state=4,
        fprnn_state=16,
        fprnn_iterations=4,
        lr=3e-3,
        eval_sequences=8,
        eval_batch=8,
        tracking_length=8,
        tracking_batch=8,
        tracking_steps=3,
        copy_length=64,
        copy_tokens=4,
        copy_vocab=4,
        copy_batch=4,
        copy_steps=2,
        copy_seeds=2,
        copy_models=("rotrnn", "attention"),
    ),
    # Widths chosen for parameter parity: RotRNN 16 heads × 8 (state 128), FP-RNN state 48.
    "cpu": Scale(
        d_model=64,
        layers=2,
        heads=4,
        rotrnn_heads=16,
        rotrnn_state=8,
        fprnn_state=48,
        fprnn_iterations=16,
        lr=3e-3,
        eval_sequences=256,
        eval_batch=16,
        tracking_length=16,
        tracking_batch=64,
        tracking_steps=1500,
        copy_length=1024,
        copy_tokens=8,
        copy_vocab=8,
        copy_batch=8,
        copy_steps=100,
        copy_seeds=1,
        copy_models=("rotrnn", "attention"),
    ),
}


# -- state tracking in A5 ------------------------------------------------------------------------


def parity(permutation: tuple[int, ...]) -> int:
    """0 for an even permutation, 1 for an odd one (inversions mod 2)."""
    return sum(a > b for a, b in itertools.combinations(permutation, 2)) % 2


def alternating_group(degree: int = 5) -> list[tuple[int, ...]]:
    """The even permutations of range(degree) in lexicographic order; their index is the class."""
    return [p for p in itertools.permutations(range(degree)) if parity(p) == 0]


def compose(outer: tuple[int, ...], inner: tuple[int, ...]) -> tuple[int, ...]:
    """outer ∘ inner: apply inner first."""
    return tuple(outer[i] for i in inner)


def multiplication_table(elements: list[tuple[int, ...]]) -> torch.Tensor:
    """table[a, b] = index of elements[a] ∘ elements[b], int64 [n, n]."""
    index = {p: i for i, p in enumerate(elements)}
    return torch.tensor([[index[compose(a, b)] for b in elements] for a in elements])


def permutation_features(elements: list[tuple[int, ...]]) -> torch.Tensor:
    """Each element as its flattened permutation matrix (one-hot of where each point goes).

    In trial runs with a learned 60-row embedding instead, no model got past position 1 (up
    to 1,500 steps, d = 32 and 64): memorising the 60 × 60 table, not tracking state, was the
    bottleneck. The matrix makes g ∘ s bilinear in the inputs and leaves the composition over
    many positions, the claim under test, to the mixers."""
    degree = len(elements[0])
    features = torch.zeros(len(elements), degree * degree)
    for row, permutation in enumerate(elements):
        features[row, [point * degree + image for point, image in enumerate(permutation)]] = 1.0
    return features


def running_products(tokens: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Label at t: the index of g_t ∘ … ∘ g_1 for element indices tokens [B, S]."""
    state = tokens[:, 0]
    labels = [state]
    for t in range(1, tokens.shape[1]):
        state = table[tokens[:, t], state]
        labels.append(state)
    return torch.stack(labels, dim=1)


def state_tracking_sampler(table: torch.Tensor) -> Sampler:
    def sample(size: int, length: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = torch.randint(0, table.shape[0], (size, length), generator=generator)
        return tokens, running_products(tokens, table)

    return sample


# -- selective copy ------------------------------------------------------------------------------


def selective_copy_batch(size: int, length: int, count: int, vocab: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` data tokens at random distinct positions among the first length − count, noise
    elsewhere, `count` markers at the end; the k-th marker's target is the k-th data token."""
    data = torch.randint(FIRST_DATA, FIRST_DATA + vocab, (size, count), generator=generator)
    positions = torch.rand(size, length - count, generator=generator).argsort(dim=1)[:, :count].sort(dim=1).values
    tokens = torch.full((size, length), NOISE, dtype=torch.long).scatter_(1, positions, data)
    tokens[:, -count:] = MARKER
    targets = torch.full_like(tokens, IGNORE)
    targets[:, -count:] = data
    return tokens, targets


def selective_copy_sampler(count: int, vocab: int) -> Sampler:
    return lambda size, length, generator: selective_copy_batch(size, length, count, vocab, generator)


# -- the tasks as run ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    name: str
    sample: Sampler
    features: torch.Tensor  # [vocab, F]: the fixed vector each token id enters the model as
    classes: int
    length: int  # training length
    eval_lengths: tuple[int, ...]
    batch: int
    steps: int
    seeds: int | None  # at most this many of the requested seeds (None: all)
    models: tuple[str, ...]


def state_tracking_task(scale: Scale) -> Task:
    """Evaluated at the training length and at twice it (length generalisation)."""
    group = alternating_group()
    length = scale.tracking_length
    return Task(
        "state_tracking",
        state_tracking_sampler(multiplication_table(group)),
        permutation_features(group),
        len(group),
        length,
        (length, 2 * length),
        scale.tracking_batch,
        scale.tracking_steps,
        None,
        MODELS,
    )


def selective_copy_task(scale: Scale) -> Task:
    vocab = FIRST_DATA + scale.copy_vocab
    return Task(
        "selective_copy",
        selective_copy_sampler(scale.copy_tokens, scale.copy_vocab),
        torch.eye(vocab),
        vocab,
        scale.copy_length,
        (scale.copy_length,),
        scale.copy_batch,
        scale.copy_steps,
        scale.copy_seeds,
        scale.copy_models,
    )


# -- the model -----------------------------------------------------------------------------------


def model_config(kind: str, scale: Scale, max_length: int) -> ModelConfig:
    """One mixer kind in every layer; only attention reads the rotary angles (RotRNN does only
    when time-conditioned, which these tasks have no use for)."""
    return ModelConfig(
        item_vocab_size=3,
        action_vocab_size=2,
        tasks=["label"],
        d_model=scale.d_model,
        heads=scale.heads,
        layers=scale.layers,
        dropout=0.0,
        max_seq_len=max_length,
        encoding="rope" if kind == "attention" else "none",
        mixers=[kind] * scale.layers,
        rotrnn={"heads": scale.rotrnn_heads, "state": scale.rotrnn_state},
        fprnn={"state": scale.fprnn_state, "max_iterations_train": scale.fprnn_iterations, "max_iterations_eval": scale.fprnn_iterations},
    )


class TaskModel(nn.Module):
    """Token classifier around the ranker's blocks, called as Ranker.encode calls them: fixed
    token features → linear embedding → blocks → LayerNorm → linear classifier."""

    def __init__(self, config: ModelConfig, features: torch.Tensor, classes: int) -> None:
        super().__init__()
        self.register_buffer("features", features, persistent=False)
        self.embedding = nn.Linear(features.shape[1], config.d_model, bias=False)
        self.encoding = build_encoding(config)
        self.blocks = nn.ModuleList(Block(config, kind) for kind in config.mixers)
        self.norm = nn.LayerNorm(config.d_model)
        self.classifier = nn.Linear(config.d_model, classes)

    def context(self, tokens: torch.Tensor) -> MixerContext:
        """Every token its own slot, no timestamps, ordinal angles where the encoding has them."""
        index = torch.arange(tokens.shape[1]).expand_as(tokens)
        zeros = torch.zeros_like(tokens)
        time = TimeInputs(slot=index, seconds=zeros, has_time=zeros.bool(), second_of_day=zeros, day_of_week=zeros, categorical={})
        valid = torch.ones_like(tokens, dtype=torch.bool)
        angles = self.encoding.angles(time)
        if angles is None:
            return MixerContext(time=time, valid=valid, cos=None, sin=None)
        return MixerContext(time=time, valid=valid, cos=torch.cos(angles).unsqueeze(1), sin=torch.sin(angles).unsqueeze(1))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        context = self.context(tokens)
        action = torch.ones_like(tokens)
        hidden = self.embedding(self.features[tokens])
        for block in self.blocks:
            hidden, _ = block(hidden, action, context)
        return self.classifier(self.norm(hidden))


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# -- training and evaluation ---------------------------------------------------------------------


def train(model: TaskModel, task: Task, lr: float, seed: int, desc: str) -> float:
    """Adam on a fresh batch every step; returns the last step's loss."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    loss = torch.tensor(float("nan"))
    for _ in tqdm(range(task.steps), desc=desc, leave=False, mininterval=5):
        tokens, targets = task.sample(task.batch, task.length, generator)
        loss = F.cross_entropy(model(tokens).flatten(0, 1), targets.flatten(), ignore_index=IGNORE)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    return float(loss.detach())


@torch.no_grad()
def evaluate(model: TaskModel, sample: Sampler, sequences: int, chunk: int, length: int, seed: int) -> dict:
    """On held-out sequences: accuracy over all scored positions; at the last one (for state
    tracking the longest product); per scored position; and `solved`, how many leading scored
    positions reach 90 %, the claim's bar (a model that tracks state keeps it at every length)."""
    generator = torch.Generator().manual_seed(seed + EVAL_SEED_OFFSET)
    model.eval()
    hits, scored = torch.zeros(length), torch.zeros(length)
    for start in range(0, sequences, chunk):
        tokens, targets = sample(min(chunk, sequences - start), length, generator)
        counted = targets != IGNORE
        hits = hits + ((model(tokens).argmax(-1) == targets) & counted).sum(0)
        scored = scored + counted.sum(0)
    per_position = (hits[scored > 0] / scored[scored > 0]).tolist()
    below = [accuracy < SOLVED for accuracy in per_position]
    return {
        "accuracy": float(hits.sum() / scored.sum()),
        "last_accuracy": per_position[-1],
        "solved": below.index(True) if any(below) else len(below),
        "per_position": per_position,
    }


def run_one(task: Task, kind: str, seed: int, scale: Scale) -> dict:
    """Train and evaluate one model on one task from one seed."""
    torch.manual_seed(seed)
    model = TaskModel(model_config(kind, scale, max(task.eval_lengths)), task.features, task.classes)
    started = time.perf_counter()
    loss = train(model, task, scale.lr, seed, f"{task.name} {kind} seed {seed}")
    row = {
        "task": task.name,
        "model": kind,
        "seed": seed,
        "params": parameter_count(model),
        "train_length": task.length,
        "steps": task.steps,
        "batch": task.batch,
        "final_loss": loss,
        "train_seconds": time.perf_counter() - started,
    }
    for length in task.eval_lengths:
        scores = evaluate(model, task.sample, scale.eval_sequences, scale.eval_batch, length, seed)
        row.update({f"{name}@{length}": value for name, value in scores.items()})
    return row


def run(scale: Scale, seeds: list[int]) -> list[dict]:
    tasks = [state_tracking_task(scale), selective_copy_task(scale)]
    return [run_one(task, kind, seed, scale) for task in tasks for kind in task.models for seed in seeds[: task.seeds]]


# -- report --------------------------------------------------------------------------------------

SCORES = ("accuracy", "last_accuracy", "solved")
"""The scalar scores summarised over seeds (per-position accuracy stays in the per-seed rows)."""


def summarise(rows: list[dict]) -> list[dict]:
    """Mean and standard deviation over seeds of every scalar score at every length, per task and model."""
    summary = []
    for (task, kind), group in itertools.groupby(rows, key=lambda r: (r["task"], r["model"])):
        group = list(group)
        entry = {
            "task": task,
            "model": kind,
            "params": group[0]["params"],
            "seeds": len(group),
            "train_seconds": statistics.mean(r["train_seconds"] for r in group),
            "scores": {},
        }
        for key in (k for k in group[0] if k.split("@")[0] in SCORES):
            values = [r[key] for r in group]
            entry["scores"][key] = {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}
        summary.append(entry)
    return summary


def mean_sd(score: dict[str, float], digits: int) -> str:
    return f"{score['mean']:.{digits}f} ± {score['std']:.{digits}f}"


def table(summary: list[dict]) -> str:
    """Markdown, one line per task, model and evaluated length; mean ± sd over seeds."""
    lines = [
        "| task | model | params | seeds | length | accuracy | last position | solved positions | train s/seed |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for entry in summary:
        scores = entry["scores"]
        for length in (key.split("@")[1] for key in scores if key.startswith("accuracy@")):
            lines.append(
                f"| {entry['task']} | {entry['model']} | {entry['params']:,} | {entry['seeds']} | {length} "
                f"| {mean_sd(scores[f'accuracy@{length}'], 3)} "
                f"| {mean_sd(scores[f'last_accuracy@{length}'], 3)} "
                f"| {mean_sd(scores[f'solved@{length}'], 1)} | {entry['train_seconds']:.0f} |"
            )
    return "\n".join(lines)


def machine() -> str:
    """The CPU model and core count (provenance.device_name says only "x86_64" on a CPU)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        model = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    return f"{model}, {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="cpu")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--json", type=Path, default=Path("benchmarks/out/mixer_tasks.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)  # a shared two-core machine: one core, and comparable timings
    commit = current_commit()  # at the start: the code that runs, even if HEAD moves during the run
    scale = SCALES[args.scale]
    rows = run(scale, args.seeds)
    summary = summarise(rows)
    print(table(summary))
    write_report(
        "mixer_tasks",
        torch.device("cpu"),
        rows,
        args.json,
        commit=commit,
        machine=machine(),
        scale=args.scale,
        settings=asdict(scale),
        summary=summary,
    )


if __name__ == "__main__":
    main()
