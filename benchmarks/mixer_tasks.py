"""The recurrent mixers' headline claims on synthetic tasks, at a scale one CPU core can train.

1. State tracking (Fixed-Point RNN, arXiv 2503.10799): a dense, input-dependent transition can
   compose permutations, which a diagonal linear RNN cannot. Tokens are random elements of A5;
   the label at position t is the running product g_t ∘ … ∘ g_1. A5 rather than S5: it is the
   smallest non-solvable group, so its word problem is already beyond diagonal linear RNNs
   (arXiv 2404.08819), while its 60 × 60 table is a quarter of S5's, which matters when the
   whole run gets a few CPU minutes. Compared: FP-RNN layers; RotRNN layers, the diagonal
   baseline (its transition is a fixed complex-diagonal γe^{iθ}; FpRnnConfig has no switch
   that turns the Householder mixing off); attention with ordinal RoPE.
2. Long-range memory (RotRNN, arXiv 2407.07239): selective copy (arXiv 2312.00752) over
   sequences of at least 1,000 tokens, mostly noise, with K data tokens at random positions
   and K markers at the end, at which the model must emit the data tokens in order.

Every model is token embedding → N pre-norm blocks (model.ranker.Block: mixer and FFN
residuals) → LayerNorm → linear classifier, with the same d_model and depth. Mixers are label
safe: the output at p sees token p and the tokens before it, which is all either task needs;
the action input is the constant id 1. Training uses freshly sampled batches; evaluation uses
sequences drawn from a generator the training never touches.

    python benchmarks/mixer_tasks.py [--scale {smoke,cpu}] [--seeds 0 1 2] [--json benchmarks/out/mixer_tasks.json]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from provenance import write_report  # benchmarks/provenance.py, beside this script
from model.config import ModelConfig
from model.context import MixerContext
from model.encodings import TimeInputs, build_encoding
from model.ranker import Block

IGNORE = -100
"""Target of positions that are not scored (cross-entropy's ignore_index)."""
NOISE, MARKER, FIRST_DATA = 0, 1, 2
"""Selective-copy token ids; data tokens are FIRST_DATA … FIRST_DATA + vocab − 1."""
MODELS = ("fprnn", "rotrnn", "attention")
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
    copy_models: tuple[str, ...]


SCALES = {
    "smoke": Scale(d_model=16, layers=1, heads=2, rotrnn_heads=2, rotrnn_state=4, fprnn_state=16, fprnn_iterations=4,
                   lr=3e-3, eval_sequences=8, eval_batch=8, tracking_length=8, tracking_batch=8, tracking_steps=3,
                   copy_length=64, copy_tokens=4, copy_vocab=4, copy_batch=4, copy_steps=2,
                   copy_models=("rotrnn", "attention")),
    "cpu": Scale(d_model=64, layers=2, heads=4, rotrnn_heads=16, rotrnn_state=8, fprnn_state=64, fprnn_iterations=16,
                 lr=3e-3, eval_sequences=512, eval_batch=128, tracking_length=16, tracking_batch=64,
                 tracking_steps=1000, copy_length=1024, copy_tokens=8, copy_vocab=8, copy_batch=16, copy_steps=300,
                 copy_models=("rotrnn", "attention")),
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

def selective_copy_batch(size: int, length: int, count: int, vocab: int, generator: torch.Generator
                         ) -> tuple[torch.Tensor, torch.Tensor]:
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


# -- the model -----------------------------------------------------------------------------------

def model_config(kind: str, scale: Scale, max_length: int) -> ModelConfig:
    """One mixer kind in every layer; only attention reads the rotary angles (RotRNN does only
    when time-conditioned, which these tasks have no use for)."""
    return ModelConfig(item_vocab_size=3, action_vocab_size=2, tasks=["label"], d_model=scale.d_model,
                       heads=scale.heads, layers=scale.layers, dropout=0.0, max_seq_len=max_length,
                       encoding="rope" if kind == "attention" else "none", mixers=[kind] * scale.layers,
                       rotrnn={"heads": scale.rotrnn_heads, "state": scale.rotrnn_state},
                       fprnn={"state": scale.fprnn_state, "max_iterations_train": scale.fprnn_iterations,
                              "max_iterations_eval": scale.fprnn_iterations})


class TaskModel(nn.Module):
    """Token classifier around the ranker's blocks, called as Ranker.encode calls them."""

    def __init__(self, config: ModelConfig, vocab: int, classes: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, config.d_model)
        self.encoding = build_encoding(config)
        self.blocks = nn.ModuleList(Block(config, kind) for kind in config.mixers)
        self.norm = nn.LayerNorm(config.d_model)
        self.classifier = nn.Linear(config.d_model, classes)

    def context(self, tokens: torch.Tensor) -> MixerContext:
        """Every token its own slot, no timestamps, ordinal angles where the encoding has them."""
        index = torch.arange(tokens.shape[1]).expand_as(tokens)
        zeros = torch.zeros_like(tokens)
        time = TimeInputs(index=index, seconds=zeros, has_time=zeros.bool(), second_of_day=zeros, day_of_week=zeros,
                          categorical={})
        valid = torch.ones_like(tokens, dtype=torch.bool)
        angles = self.encoding.angles(time)
        if angles is None:
            return MixerContext(time=time, valid=valid, cos=None, sin=None)
        return MixerContext(time=time, valid=valid, cos=torch.cos(angles).unsqueeze(1), sin=torch.sin(angles).unsqueeze(1))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        context = self.context(tokens)
        action = torch.ones_like(tokens)
        hidden = self.embedding(tokens)
        for block in self.blocks:
            mixed, _ = block.mixer(block.mixer_norm(hidden), action, context)
            hidden = hidden + mixed
            hidden = hidden + block.ffn(block.ffn_norm(hidden))
        return self.classifier(self.norm(hidden))


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# -- training and evaluation ---------------------------------------------------------------------

def train(model: TaskModel, sample: Sampler, batch: int, length: int, steps: int, lr: float, seed: int,
          label: str) -> float:
    """Adam on a fresh batch every step; returns the last step's loss."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    loss = torch.tensor(float("nan"))
    for _ in tqdm(range(steps), desc=label, leave=False, mininterval=5):
        tokens, targets = sample(batch, length, generator)
        loss = F.cross_entropy(model(tokens).flatten(0, 1), targets.flatten(), ignore_index=IGNORE)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    return float(loss.detach())


@torch.no_grad()
def evaluate(model: TaskModel, sample: Sampler, sequences: int, chunk: int, length: int, seed: int
             ) -> dict[str, float]:
    """Accuracy over the scored positions of held-out sequences, and at the last position alone
    (for state tracking the hardest one: the longest product)."""
    generator = torch.Generator().manual_seed(seed + EVAL_SEED_OFFSET)
    model.eval()
    correct = scored = last_correct = 0
    for start in range(0, sequences, chunk):
        tokens, targets = sample(min(chunk, sequences - start), length, generator)
        hits = (model(tokens).argmax(-1) == targets) & (targets != IGNORE)
        correct += int(hits.sum())
        scored += int((targets != IGNORE).sum())
        last_correct += int(hits[:, -1].sum())
    return {"accuracy": correct / scored, "last_accuracy": last_correct / sequences}


def run_one(task: str, kind: str, seed: int, scale: Scale) -> dict:
    """Train and evaluate one model on one task from one seed."""
    if task == "state_tracking":
        table = multiplication_table(alternating_group())
        sample, vocab, classes = state_tracking_sampler(table), table.shape[0], table.shape[0]
        length, batch, steps, lengths = scale.tracking_length, scale.tracking_batch, scale.tracking_steps, \
            (scale.tracking_length, 2 * scale.tracking_length)
    else:
        sample = selective_copy_sampler(scale.copy_tokens, scale.copy_vocab)
        vocab = classes = FIRST_DATA + scale.copy_vocab
        length, batch, steps, lengths = scale.copy_length, scale.copy_batch, scale.copy_steps, (scale.copy_length,)
    torch.manual_seed(seed)
    model = TaskModel(model_config(kind, scale, max(lengths)), vocab, classes)
    started = time.perf_counter()
    loss = train(model, sample, batch, length, steps, scale.lr, seed, f"{task} {kind} seed {seed}")
    trained = time.perf_counter() - started
    row = {"task": task, "model": kind, "seed": seed, "params": parameter_count(model), "train_length": length,
           "steps": steps, "batch": batch, "final_loss": loss, "train_seconds": trained}
    for eval_length in lengths:
        scores = evaluate(model, sample, scale.eval_sequences, scale.eval_batch, eval_length, seed)
        row.update({f"{name}@{eval_length}": value for name, value in scores.items()})
    return row


def run(scale: Scale, seeds: list[int]) -> list[dict]:
    plan = [("state_tracking", kind) for kind in MODELS] + [("selective_copy", kind) for kind in scale.copy_models]
    return [run_one(task, kind, seed, scale) for task, kind in plan for seed in seeds]


# -- report --------------------------------------------------------------------------------------

def summarise(rows: list[dict]) -> list[dict]:
    """Mean and standard deviation over seeds of every accuracy, per task and model."""
    summary = []
    for (task, kind), group in itertools.groupby(rows, key=lambda r: (r["task"], r["model"])):
        group = list(group)
        entry = {"task": task, "model": kind, "params": group[0]["params"], "seeds": len(group),
                 "train_seconds": sum(r["train_seconds"] for r in group) / len(group)}
        for key in (k for k in group[0] if "accuracy@" in k):
            values = [r[key] for r in group]
            entry[key] = statistics.mean(values)
            entry[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        summary.append(entry)
    return summary


def table(summary: list[dict]) -> str:
    """Markdown: accuracy (mean ± sd over seeds) at each evaluated length, all positions and last."""
    lines = ["| task | model | params | seeds | length | accuracy | last position | train s/seed |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for entry in summary:
        for key in (k for k in entry if k.startswith("accuracy@") and not k.endswith("_std")):
            length = key.split("@")[1]
            last = f"last_accuracy@{length}"
            lines.append(f"| {entry['task']} | {entry['model']} | {entry['params']:,} | {entry['seeds']} | {length} "
                         f"| {entry[key]:.3f} ± {entry[key + '_std']:.3f} | {entry[last]:.3f} ± {entry[last + '_std']:.3f} "
                         f"| {entry['train_seconds']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="cpu")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--json", type=Path, default=Path("benchmarks/out/mixer_tasks.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)  # a shared two-core machine: one core, and comparable timings
    scale = SCALES[args.scale]
    rows = run(scale, args.seeds)
    summary = summarise(rows)
    print(table(summary))
    write_report("mixer_tasks", torch.device("cpu"), rows, args.json, scale=args.scale, settings=asdict(scale),
                 summary=summary)


if __name__ == "__main__":
    main()
