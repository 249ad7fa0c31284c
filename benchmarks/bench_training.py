"""Training throughput of `rotorec train`: tokens/s and examples/s in two settings.

- feed: the shipped feed config (configs/feed_paper.yaml: 2 layers, d = 64, 2 heads, length 512,
  batch 16, three task heads) on the synthetic feed;
- movielens-style: d = 64, 2 layers, length 200, batch 32, full-softmax next-item head plus a
  like head (configs/movielens_next_item.yaml), on the same feed prepared with length 200.

Each setting trains through the real CLI for --steps steps; throughput is read from the run's
train_log.jsonl (windows of --log-every steps), skipping the first window (warm-up, allocator
and, on GPU, kernel compilation) and taking the median of the rest.

    python benchmarks/bench_training.py [--steps 60] [--json benchmarks/out/training.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import torch

from provenance import write_report  # benchmarks/provenance.py, beside this script

REPO = Path(__file__).resolve().parents[1]
SETTINGS = {  # name: (config, prepared max length, extra overrides)
    "feed": ("feed_paper.yaml", 512, []),
    "movielens-style": ("movielens_next_item.yaml", 200, ["model.tasks=[like]"]),
}


def rotorec(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "rotorec", "--log-level", "WARNING", *args], check=True, cwd=REPO)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--work", type=Path, default=REPO / "benchmarks" / "out" / "training")
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "out" / "training.json")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    log = args.work / "synth"
    if not (log / "events.parquet").is_file():
        rotorec("synth", "--out", str(log), "--preset", "small", "--users", str(args.users), "--seed", "0", "--no-progress")
    rows = []
    print(f"{'setting':>16} {'tokens/s':>12} {'examples/s':>11} {'steps':>6}", flush=True)
    for name, (config, max_len, overrides) in SETTINGS.items():
        prepared = args.work / f"prepared-{max_len}"
        if not (prepared / "schema.json").is_file():
            rotorec("prepare", "--input", str(log), "--out", str(prepared), "--max-len", str(max_len), "--windows", "all", "--no-progress")
        run = args.work / f"run-{name}"
        shutil.rmtree(run, ignore_errors=True)
        settings = [
            f"train.max_steps={args.steps}",
            f"train.log_every={args.log_every}",
            f"train.eval_every={args.steps}",
            f"train.checkpoint_every={args.steps}",
            "train.tensorboard=false",
            *overrides,
        ]
        rotorec(
            "train",
            "--data",
            str(prepared),
            "--config",
            str(REPO / "configs" / config),
            "--out",
            str(run),
            "--no-progress",
            *[arg for setting in settings for arg in ("--set", setting)],
        )
        windows = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
        windows = [w for w in windows if "tokens_per_s" in w][1:]
        row = {
            "setting": name,
            "config": config,
            "max_len": max_len,
            "steps": args.steps,
            "tokens_per_s": statistics.median(w["tokens_per_s"] for w in windows),
            "examples_per_s": statistics.median(w["examples_per_s"] for w in windows),
            "bf16_autocast": device.type == "cuda",
        }
        rows.append(row)
        print(f"{name:>16} {row['tokens_per_s']:>12,.0f} {row['examples_per_s']:>11,.1f} {args.steps:>6}", flush=True)
    write_report("training", device, rows, args.json)


if __name__ == "__main__":
    main()
