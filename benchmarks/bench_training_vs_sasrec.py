"""Training speed of rotorec next to the SASRec baseline at equal width and depth, in one process.

Every model trains on the same batches (next-item, full softmax over the catalogue, Adam), one
step of each in turn so drift in machine speed hits all alike; the table gives the median step
time, tokens/s and the ratio to SASRec. rotorec runs as shipped (SIREN-RoPE) and with parts
removed (ordinal RoPE, no rotation) and with SASRec's feed-forward width (d instead of 4d), and a profile of one step of each names
the operators that take the time, which is how a slowdown is traced to its cause. With `--bf16`, SASRec
and rotorec also run under CPU bf16 autocast (`train.cpu_bf16`, `sasrec.py --bf16`), the fp32 rows
being the reference for the speed-up.

    python benchmarks/bench_training_vs_sasrec.py [--steps 30] [--length 200] [--bf16] [--json benchmarks/out/training_vs_sasrec.json]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from bench_model import ITEMS, random_batch  # benchmarks/, beside this script
from provenance import write_report
from baselines.sasrec import SASRec, training_loss
from rotorec.features.dataset import SequenceBatch
from rotorec.model.config import ModelConfig
from rotorec.model.ranker import Ranker
from rotorec.training.trainer import compute_loss, cpu_has_native_bf16

REPO = Path(__file__).resolve().parents[1]


def rotorec_variants(width: int, layers: int, heads: int, length: int) -> dict[str, ModelConfig]:
    base = {
        "item_vocab_size": ITEMS,
        "action_vocab_size": 8,
        "categorical": {"category": {"vocab_size": 18}},
        "tasks": [],
        "d_model": width,
        "heads": heads,
        "layers": layers,
        "max_seq_len": length,
        "next_item": {"loss": "full"},
        "siren": {"branches": ["timestamp", "cyclic"], "hidden": 32},
    }
    return {
        "rotorec siren_rope": ModelConfig.model_validate({**base, "encoding": "siren_rope"}),
        "rotorec rope": ModelConfig.model_validate({**base, "encoding": "rope"}),
        "rotorec none": ModelConfig.model_validate({**base, "encoding": "none"}),
        "rotorec siren_rope, FFN 1×d": ModelConfig.model_validate({**base, "encoding": "siren_rope", "ffn_multiplier": 1}),
    }


def step_function(model: torch.nn.Module, bf16: bool = False):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    columns = torch.zeros(0, dtype=torch.long)

    def step(batch: SequenceBatch) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            if isinstance(model, SASRec):
                loss = training_loss(model, batch, "full", generator)
            else:
                loss, _ = compute_loss(model, model, batch, 0, columns)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def top_operators(step, batch: SequenceBatch, count: int = 6) -> list[dict]:
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        step(batch)
    events = sorted(profiler.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:count]
    return [{"op": e.key, "self_ms": e.self_cpu_time_total / 1000} for e in events]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--length", type=int, default=200)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--bf16", action="store_true", help="also SASRec and rotorec siren_rope under CPU bf16 autocast")
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "out" / "training_vs_sasrec.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    batch = random_batch(args.batch_size, args.length, torch.device("cpu"))
    variants = rotorec_variants(args.width, args.layers, args.heads, args.length)
    models: dict[str, torch.nn.Module] = {"sasrec": SASRec(ITEMS, args.length, args.width, args.layers, args.heads, 0.2)}
    models.update({name: Ranker(config) for name, config in variants.items()})
    steps = {name: step_function(model.train()) for name, model in models.items()}
    if args.bf16:
        if not cpu_has_native_bf16():
            parser.error("--bf16: this CPU has no native bf16 (AVX-512 BF16 / AMX)")
        models["sasrec, bf16"] = SASRec(ITEMS, args.length, args.width, args.layers, args.heads, 0.2)
        models["rotorec siren_rope, bf16"] = Ranker(variants["rotorec siren_rope"])
        steps.update({name: step_function(models[name].train(), bf16=True) for name in ("sasrec, bf16", "rotorec siren_rope, bf16")})
    times: dict[str, list[float]] = {name: [] for name in steps}
    for repeat in range(args.warmup + args.steps):
        for name, step in steps.items():
            started = time.perf_counter()
            step(batch)
            if repeat >= args.warmup:
                times[name].append(time.perf_counter() - started)
    tokens = int(batch.valid.sum())
    reference = statistics.median(times["sasrec"])
    rows = []
    print(f"{'model':>28} {'ms/step':>9} {'tokens/s':>10} {'× SASRec time':>14}  top operators (self ms)")
    for name, values in times.items():
        median = statistics.median(values)
        operators = top_operators(steps[name], batch)
        rows.append(
            {
                "model": name,
                "ms_per_step": median * 1000,
                "tokens_per_s": tokens / median,
                "time_vs_sasrec": median / reference,
                "parameters": sum(p.numel() for p in models[name].parameters()),
                "top_operators": operators,
            }
        )
        ops = ", ".join(f"{o['op']} {o['self_ms']:.0f}" for o in operators[:4])
        print(f"{name:>28} {median * 1000:>9.1f} {tokens / median:>10,.0f} {median / reference:>14.2f}  {ops}")
    write_report(
        "training_vs_sasrec",
        torch.device("cpu"),
        rows,
        args.json,
        settings={k: v for k, v in vars(args).items() if k != "json"},
        catalogue=ITEMS - 2,
    )


if __name__ == "__main__":
    main()
