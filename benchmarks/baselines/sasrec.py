"""SASRec (Kang & McAuley, ICDM 2018, arXiv 1808.09781), written from the paper as a baseline.

Causal self-attention over a user's items, learned absolute positions, item embeddings shared
with the output layer, pre-LayerNorm blocks with residuals and dropout (paper §III-B/C), the
point-wise feed-forward of width d with ReLU. Two objectives:

    full   softmax cross-entropy over the whole catalogue (what strong re-implementations use)
    bce    the paper's: binary cross-entropy of the positive against one uniform negative per step

It reads the same prepared folder as `rotorec train` (features.dataset.SequenceDataset, the same
training windows and batch order) and is scored by the evaluation's own functions
(training.retrieval.next_item_ranks → training.metrics.next_item_metrics), so its numbers and
rotorec's are comparable by construction. Model selection on validation NDCG@10; test is read
once, with the selected weights.

    python benchmarks/baselines/sasrec.py --data PREPARED --out DIR [--loss full] [--minutes 20]
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from rotorec.features.dataset import SequenceBatch, SequenceDataset
from rotorec.model.losses import FIRST_ITEM_ID, full_softmax_loss
from rotorec.training.metrics import next_item_metrics
from rotorec.training.retrieval import next_item_ranks
from rotorec.training.batches import batch_indices
from rotorec.training.trainer import use_autocast


class SASRecBlock(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.attention_norm = nn.LayerNorm(width)
        self.query_key_value = nn.Linear(width, 3 * width)
        self.output = nn.Linear(width, width)
        self.ffn_norm = nn.LayerNorm(width)
        self.ffn = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Dropout(dropout), nn.Linear(width, width))
        self.residual_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        heads = self.query_key_value(self.attention_norm(x)).view(batch, length, 3, self.heads, width // self.heads)
        query, key, value = heads.permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(query, key, value, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        x = x + self.residual_dropout(self.output(attended.transpose(1, 2).reshape(batch, length, width)))
        return x + self.residual_dropout(self.ffn(self.ffn_norm(x)))


class SASRec(nn.Module):
    """Right-padded windows are fine with a plain causal mask: padding only follows real events.
    Positions count back from the window's end, as in the paper's left-padded sequences, so the
    newest event always has the same position embedding."""

    def __init__(self, item_vocab_size: int, max_len: int, width: int = 64, blocks: int = 2, heads: int = 1, dropout: float = 0.2) -> None:
        super().__init__()
        self.max_len = max_len
        self.item_embedding = nn.Embedding(item_vocab_size, width, padding_idx=0)
        self.position_embedding = nn.Embedding(max_len, width)
        self.embedding_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(SASRecBlock(width, heads, dropout) for _ in range(blocks))
        self.final_norm = nn.LayerNorm(width)
        nn.init.normal_(self.item_embedding.weight, std=width**-0.5)

    def forward(self, item: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Hidden states [B, T, d]: the query at position p predicts the item at p + 1."""
        slots = torch.arange(item.shape[1], device=item.device)[None, :]
        positions = (self.max_len - lengths[:, None] + slots).clamp(0, self.max_len - 1)
        x = self.item_embedding(item) * self.item_embedding.embedding_dim**0.5 + self.position_embedding(positions)
        x = self.embedding_dropout(x) * (item > 0).unsqueeze(-1)
        for block in self.blocks:
            x = block(x)
        return self.final_norm(x)

    def next_item_scores(self, batch: SequenceBatch, rows: torch.Tensor) -> torch.Tensor:
        """The NextItemScorer contract (training.retrieval): dot products with every catalogue item."""
        hidden = self(batch.item, batch.lengths)[:, :-1][rows]
        return hidden @ self.item_embedding.weight[FIRST_ITEM_ID:].T

    @property
    def device(self) -> torch.device:
        return self.item_embedding.weight.device


def training_loss(model: SASRec, batch: SequenceBatch, loss: str, generator: torch.Generator) -> torch.Tensor:
    rows = batch.target[:, 1:] & batch.valid[:, :-1] & (batch.item[:, 1:] >= FIRST_ITEM_ID)
    hidden = model(batch.item, batch.lengths)[:, :-1][rows]
    positives = batch.item[:, 1:][rows]
    table = model.item_embedding.weight
    if loss == "full":
        return full_softmax_loss(hidden @ table[FIRST_ITEM_ID:].T, positives)
    negatives = torch.randint(FIRST_ITEM_ID, table.shape[0], positives.shape, generator=generator)
    positive_logit = (hidden * table[positives]).sum(-1)
    negative_logit = (hidden * table[negatives]).sum(-1)
    return F.softplus(-positive_logit).mean() + F.softplus(negative_logit).mean()


def validation_ndcg(model: SASRec, dataset: SequenceDataset) -> float:
    ranks, _ = next_item_ranks(model.eval(), dataset)
    model.train()
    return next_item_metrics(ranks)["ndcg@10"]


def fit(
    data: Path,
    *,
    loss: str = "full",
    width: int = 64,
    blocks: int = 2,
    heads: int = 1,
    dropout: float = 0.2,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    batch_size: int = 128,
    max_steps: int = 100_000,
    minutes: float = 20.0,
    eval_every: int = 250,
    patience: int = 5,
    seed: int = 0,
    bf16: bool = False,
    progress: bool = True,
) -> tuple[SASRec, dict]:
    """Train with Adam at a constant rate (as the paper), keep the weights best on validation.
    `bf16`: the same CPU bf16 autocast as rotorec's `train.cpu_bf16`, so both get equal step budgets."""
    torch.manual_seed(seed)
    train, valid = SequenceDataset(data, "train"), SequenceDataset(data, "valid")
    model = SASRec(train.schema.item_vocab_size, train.schema.max_len, width, blocks, heads, dropout)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    best = {"ndcg@10": -1.0, "step": 0}
    best_state, stale, step, history = copy.deepcopy(model.state_dict()), 0, 0, []
    started = time.perf_counter()
    tokens = 0
    autocast = use_autocast(torch.device("cpu"), False, bf16)
    bar = tqdm(total=max_steps, desc=f"sasrec-{loss}", unit="step", disable=not progress)
    while step < max_steps and stale < patience and time.perf_counter() - started < minutes * 60:
        batch = train.__getitems__(batch_indices(len(train), batch_size, seed, step))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            value = training_loss(model, batch, loss, generator)
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
        step += 1
        tokens += int(batch.valid.sum())
        bar.update(1)
        if step % eval_every == 0:
            score = validation_ndcg(model, valid)
            history.append(
                {"step": step, "loss": float(value.detach()), "valid_ndcg@10": score, "minutes": (time.perf_counter() - started) / 60}
            )
            bar.set_postfix(loss=f"{float(value.detach()):.3f}", valid=f"{score:.4f}")
            if score > best["ndcg@10"]:
                best, best_state, stale = {"ndcg@10": score, "step": step}, copy.deepcopy(model.state_dict()), 0
            else:
                stale += 1
    bar.close()
    elapsed = time.perf_counter() - started
    model.load_state_dict(best_state)
    return model.eval(), {"best": best, "steps": step, "train_seconds": elapsed, "tokens_per_s": tokens / elapsed, "history": history}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a `rotorec prepare` folder")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--loss", choices=["full", "bce"], default="full")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument("--heads", type=int, default=1)
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--max-steps", type=int, default=100_000)
    parser.add_argument("--minutes", type=float, default=20.0, help="wall-clock training budget")
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast on a CPU with native bf16")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, training = fit(
        args.data,
        loss=args.loss,
        width=args.width,
        blocks=args.blocks,
        heads=args.heads,
        dropout=args.dropout,
        lr=args.lr,
        batch_size=args.batch_size,
        max_steps=args.max_steps,
        minutes=args.minutes,
        eval_every=args.eval_every,
        patience=args.patience,
        seed=args.seed,
        bf16=args.bf16,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"model": "sasrec", "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "training": training}
    for split in ("valid", "test"):
        ranks, users = next_item_ranks(model, SequenceDataset(args.data, split))
        np.save(args.out / f"ranks_{split}.npy", ranks)
        np.save(args.out / f"users_{split}.npy", users.astype(str))
        report[split] = next_item_metrics(ranks)
    (args.out / "metrics.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({split: report[split] for split in ("valid", "test")}, indent=2))


if __name__ == "__main__":
    main()
