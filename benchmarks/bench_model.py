"""Cost of SIREN-RoPE over ordinal RoPE: training step and inference time, side by side.

The paper's setting (2 layers, d = 128, 4 heads, batch 256, length 50) and length 200. Both
encodings run in the same process on the same batches; runs alternate between encodings so
drift in machine speed hits both alike, and the median of each is compared as a ratio.

    python benchmarks/bench_model.py [--device cuda] [--lengths 50 200] [--json benchmarks/out/model.json]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from provenance import write_report  # benchmarks/provenance.py, beside this script
from rotorec.features.dataset import SequenceBatch
from rotorec.model.config import ModelConfig
from rotorec.model.inputs import encode_batch
from rotorec.model.losses import task_loss
from rotorec.model.ranker import Ranker

ITEMS, CATEGORIES, TASKS = 4_000, 18, ["click", "like", "long_dwell"]


def random_batch(size: int, length: int, device: torch.device, seed: int = 0) -> SequenceBatch:
    g = torch.Generator().manual_seed(seed)
    start = 1_704_067_200
    timestamp = start + torch.sort(torch.randint(0, 60 * 86_400, (size, length), generator=g), dim=1).values
    offsets = torch.randint(-8, 9, (size, 1), generator=g).expand(size, length) * 60
    local = timestamp + offsets * 60
    tensors = dict(
        item=torch.randint(2, ITEMS, (size, length), generator=g),
        categorical={"category": torch.randint(2, CATEGORIES, (size, length, 1), generator=g)},
        labels=(torch.rand(size, length, len(TASKS), generator=g) < 0.05).float(),
        label_mask=torch.ones(size, length, len(TASKS), dtype=torch.bool),
        probabilities=torch.zeros(size, length, 0, dtype=torch.float64),
        action=torch.randint(2, 8, (size, length), generator=g),
        timestamp=timestamp,
        has_time=torch.ones(size, length, dtype=torch.bool),
        tz_offset_minutes=offsets,
        second_of_day=torch.remainder(local, 86_400),
        day_of_week=torch.remainder(local.div(86_400, rounding_mode="floor") + 3, 7),
        impression=torch.zeros(size, length, dtype=torch.long),
        row=torch.zeros(size, length, dtype=torch.long),
        target=torch.ones(size, length, dtype=torch.bool),
        valid=torch.ones(size, length, dtype=torch.bool),
        lengths=torch.full((size,), length),
        users=[str(i) for i in range(size)],
    )
    return SequenceBatch(**tensors).to(device)


def build(encoding: str, length: int, device: torch.device) -> tuple[Ranker, torch.optim.Optimizer]:
    torch.manual_seed(0)
    config = ModelConfig(
        item_vocab_size=ITEMS,
        action_vocab_size=8,
        categorical={"category": {"vocab_size": CATEGORIES}},
        tasks=TASKS,
        d_model=128,
        heads=4,
        layers=2,
        dropout=0.2,
        max_seq_len=length,
        encoding=encoding,
    )
    model = Ranker(config).to(device)
    return model, torch.optim.AdamW(model.parameters(), lr=1e-3)


def train_step(model: Ranker, optimizer: torch.optim.Optimizer, batch: SequenceBatch, autocast: bool) -> None:
    model.train()
    with torch.autocast(device_type=batch.item.device.type, dtype=torch.bfloat16, enabled=autocast):
        hidden = encode_batch(model, batch).hidden
        loss, _ = task_loss(model.task_logits(hidden), batch.labels, batch.label_mask, batch.target & batch.valid)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


@torch.inference_mode()
def infer(model: Ranker, _optimizer, batch: SequenceBatch, autocast: bool) -> None:
    model.eval()
    with torch.autocast(device_type=batch.item.device.type, dtype=torch.bfloat16, enabled=autocast):
        model.task_logits(encode_batch(model, batch).hidden)


def timed(fn, *args, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn(*args)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def compare(length: int, batch_size: int, device: torch.device, repeats: int, warmup: int) -> list[dict]:
    batch = random_batch(batch_size, length, device)
    autocast = device.type == "cuda"
    models = {name: build(name, length, device) for name in ("rope", "siren_rope")}
    rows = []
    for phase, fn in (("train_step", train_step), ("inference", infer)):
        samples: dict[str, list[float]] = {name: [] for name in models}
        for step in range(warmup + repeats):
            for name, (model, optimizer) in models.items():
                elapsed = timed(fn, model, optimizer, batch, autocast, device=device)
                if step >= warmup:
                    samples[name].append(elapsed)
        rope, siren = statistics.median(samples["rope"]), statistics.median(samples["siren_rope"])
        rows.append(
            {
                "length": length,
                "batch": batch_size,
                "phase": phase,
                "rope_ms": rope * 1e3,
                "siren_rope_ms": siren * 1e3,
                "overhead_pct": (siren / rope - 1) * 100,
                "params_rope": sum(p.numel() for p in models["rope"][0].parameters()),
                "params_siren_rope": sum(p.numel() for p in models["siren_rope"][0].parameters()),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--lengths", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/out/model.json"))
    args = parser.parse_args()
    device = torch.device(args.device)
    rows = [row for length in args.lengths for row in compare(length, args.batch, device, args.repeats, args.warmup)]
    print(f"{'length':>6} {'phase':>11} {'rope ms':>9} {'siren ms':>9} {'overhead':>9}")
    for r in rows:
        print(f"{r['length']:>6} {r['phase']:>11} {r['rope_ms']:>9.2f} {r['siren_rope_ms']:>9.2f} {r['overhead_pct']:>8.1f}%")
    extra = rows[0]["params_siren_rope"] / rows[0]["params_rope"] - 1
    print(f"parameters: rope {rows[0]['params_rope']:,}, siren_rope {rows[0]['params_siren_rope']:,} (+{extra:.2%})")
    write_report("model", device, rows, args.json)


if __name__ == "__main__":
    main()
