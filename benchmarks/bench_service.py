"""Loopback load on a real `rotorec serve`: latency percentiles, throughput, candidate scaling.

For history 256 × candidates {10, 100, 500, 1000}: one client (latency: p50/p99) and several
concurrent clients (throughput), with dynamic micro-batching (max_batch_size 32) and without
(max_batch_size 1), each a fresh server process on 127.0.0.1. The candidate-scaling ratio is the
single-client median cost of 1,000 candidates over that of 10 (target ≤ 3). Bounded: a fixed
number of requests per cell, never an open-ended flood.

    python benchmarks/bench_service.py --run demo/run [--requests 200] [--clients 8]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import torch

from rotorec.features.vocab import Vocabulary
from rotorec.service.sample import wait_until_ready
from provenance import write_report  # benchmarks/provenance.py, beside this script

CANDIDATES = (10, 100, 500, 1000)
HISTORY = 256


def start_server(run: Path, batch_size: int, threads: int) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rotorec",
            "--log-level",
            "WARNING",
            "serve",
            "--run",
            str(run),
            "--port",
            str(port),
            "--max-batch-size",
            str(batch_size),
            "--threads",
            str(threads),
        ],
        env={**os.environ, "ROTOREC_SCORING_TOKENS": ""},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, alive=lambda: process.poll() is None)
    except RuntimeError:
        process.kill()
        raise
    return process, url


def feed(keys: np.ndarray, candidates: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    now = 1_717_400_000
    times = np.sort(rng.integers(now - 30 * 86_400, now, HISTORY))
    return {
        "user_id": f"u{seed}",
        "request_time": now,
        "history": [{"item_id": str(k), "timestamp": int(t), "action": "none"} for k, t in zip(rng.choice(keys, HISTORY), times)],
        "candidates": [{"item_id": str(k)} for k in rng.choice(keys, candidates)],
    }


def run_cell(url: str, bodies: list[dict], clients: int) -> dict:
    """Each client thread keeps one keep-alive connection and sends pre-encoded bodies, so the
    latency is the server's, not the load generator's JSON encoding or TCP set-up."""
    latencies: list[float] = []
    encoded = [json.dumps(body).encode() for body in bodies]
    local = threading.local()

    def one(body: bytes) -> None:
        if not hasattr(local, "client"):
            local.client = httpx.Client(timeout=60, headers={"content-type": "application/json"})
        start = time.perf_counter()
        response = local.client.post(f"{url}/v1/rank", content=body)
        latencies.append(time.perf_counter() - start)
        response.raise_for_status()

    for body in encoded[:3]:  # warm-up
        one(body)
    latencies.clear()
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, encoded))
    elapsed = time.perf_counter() - start
    ordered = sorted(latencies)
    return {
        "p50_ms": 1e3 * statistics.median(ordered),
        "p99_ms": 1e3 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
        "requests_per_s": len(bodies) / elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("demo/run"))
    parser.add_argument("--requests", type=int, default=200, help="requests per cell")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients for the throughput cells")
    parser.add_argument("--threads", type=int, default=2, help="torch threads in the server")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/out/service.json"))
    args = parser.parse_args()
    keys = Vocabulary.load(args.run / "vocab", "item").keys
    rows = []
    for batching, batch_size in (("micro-batching", 32), ("no batching", 1)):
        process, url = start_server(args.run, batch_size, args.threads)
        try:
            for count in CANDIDATES:
                bodies = [feed(keys, count, seed) for seed in range(args.requests)]
                for clients in (1, args.clients):
                    row = {
                        "batching": batching,
                        "candidates": count,
                        "history": HISTORY,
                        "clients": clients,
                        **run_cell(url, bodies, clients),
                    }
                    rows.append(row)
                    print(
                        f"{batching:>15} C={count:>5} clients={clients:>2}  p50 {row['p50_ms']:7.1f} ms  "
                        f"p99 {row['p99_ms']:7.1f} ms  {row['requests_per_s']:7.1f} req/s",
                        flush=True,
                    )
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
    single = {r["candidates"]: r["p50_ms"] for r in rows if r["batching"] == "micro-batching" and r["clients"] == 1}
    ratio = single[1000] / single[10]
    print(f"candidate scaling (p50 of 1,000 ÷ 10 candidates, one client): {ratio:.2f} (target ≤ 3)")
    write_report("service", torch.device("cpu"), rows, args.json, candidate_scaling_ratio=ratio, run=str(args.run))


if __name__ == "__main__":
    main()
