"""Featurization throughput of `rotorec prepare` on the canonical Parquet path, per core.

For each size, a canonical event log is generated in time order, as appended logs are (users,
items, int64 seconds, impressions, per-event time zones, a categorical field, two binary
labels; ~500 events per user over 60 days), then `prepare` runs in a fresh
process pinned to one Arrow thread. With `--threads 1 2`, each repeat runs prepare with
`--threads 1` pinned to one core, then `--threads 2` pinned to two (Linux CPU affinity), so
the scaling is read from runs side by side, beside what the machine gives plain NumPy work on
as many processes (`machine_scaling`: virtual cores often share memory bandwidth). Reported: wall time of prepare, events/s, peak
RSS, and peak RSS per event (memory should grow with the compact per-event columns, not the
raw log).

    python benchmarks/bench_features.py --sizes 1000000 10000000 --threads 1 2 --json benchmarks/out/features.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")


def make_log(path: Path, events: int, seed: int = 0) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    users, items = max(events // 500, 1), max(events // 50, 10)
    start = 1_704_067_200  # 2024-01-01
    span = 60 * 86_400
    with pq.ParquetWriter(path, _schema()) as writer:
        for first in range(0, events, 1 << 20):
            n = min(1 << 20, events - first)
            # Appended logs are in time order: each chunk covers the next slice of the period.
            low = start + span * first // events
            timestamp = np.sort(rng.integers(low, start + span * (first + n) // events, n))
            user = rng.integers(0, users, n)
            writer.write_table(
                pa.table(
                    {
                        "user_id": user,
                        "item_id": rng.zipf(1.3, n) % items,
                        "timestamp": timestamp,
                        "impression_id": user * 100_000 + (timestamp - start) // 1800,
                        "tz_offset_minutes": ((user % 5) * 60 - 120).astype(np.int16),
                        "category": np.char.add("c", (rng.integers(0, 40, n)).astype(str)),
                        "click": (rng.random(n) < 0.05).astype(np.int8),
                        "like": (rng.random(n) < 0.02).astype(np.int8),
                    },
                    schema=_schema(),
                )
            )


def _schema():
    import pyarrow as pa

    return pa.schema(
        [
            ("user_id", pa.int64()),
            ("item_id", pa.int64()),
            ("timestamp", pa.int64()),
            ("impression_id", pa.int64()),
            ("tz_offset_minutes", pa.int16()),
            ("category", pa.string()),
            ("click", pa.int8()),
            ("like", pa.int8()),
        ]
    )


def run_one(log_dir: Path, out_dir: Path, group_events: int | None, engine: str | None, threads: int | None) -> dict:
    """Runs in the child process: prepare once, report wall time and peak RSS. With `threads`,
    the process is pinned to that many cores first."""
    import resource

    if threads is not None:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:threads])

    import pyarrow as pa

    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    from rotorec.features.adapters.events import events_source
    from rotorec.features.prepare import PrepareOptions, prepare
    from rotorec.features.schema import LogSchema

    schema = LogSchema(
        impression_id="impression_id",
        tz_offset_minutes="tz_offset_minutes",
        timestamp_unit="auto",
        labels={"click": {}, "like": {}},
        categorical={"category": {}},
    )
    options = {"max_len": 200, "progress": False}
    if group_events is not None:  # None: the code's default (and a commit from before the option)
        options["group_events"] = group_events
    if engine is not None:  # "dask": a local cluster of 2 worker processes (the driver's RSS is reported)
        options.update(engine=engine, engine_workers=2)
    if threads is not None:  # None: a commit from before the option
        options["threads"] = threads
    started = time.perf_counter()
    stats = prepare(events_source(log_dir, schema), out_dir, PrepareOptions(**options))
    wall = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "events": stats["input_rows"],
        "wall_s": wall,
        "events_per_s": stats["input_rows"] / wall,
        "threads": threads or 1,
        "cores": len(os.sched_getaffinity(0)),
        "peak_rss_mib": peak_kib / 1024,
        "peak_rss_bytes_per_event": peak_kib * 1024 / stats["input_rows"],
        "timings": stats["timings"],
    }


def _numpy_work() -> float:
    """Seconds of plain memory-bound NumPy work: a random gather, a sort, arithmetic (16M int64)."""
    import numpy as np

    rng = np.random.default_rng(0)
    values, order = rng.integers(0, 1 << 40, 1 << 24), rng.permutation(1 << 24)
    started = time.perf_counter()
    for _ in range(3):
        np.take(values, order)
        np.sort(values)
        values * 3 + 1
    return time.perf_counter() - started


def machine_scaling(cores: int, rounds: int = 5) -> dict:
    """What `cores` processes of plain NumPy work get from this machine: the work of
    `_numpy_work` alone, then in `cores` processes at once, alternating. A virtual machine's
    cores can share memory bandwidth or be taken by other guests, so prepare's speedup is read
    beside this ceiling, measured in the same run (median of `rounds`)."""
    from concurrent.futures import ProcessPoolExecutor
    from statistics import median

    ratios = []
    with ProcessPoolExecutor(cores) as pool:
        for _ in range(rounds):
            alone = pool.submit(_numpy_work).result()
            together = max(f.result() for f in [pool.submit(_numpy_work) for _ in range(cores)])
            ratios.append(cores * alone / together)
    return {"cores": cores, "speedup": median(ratios), "speedups": [round(r, 3) for r in ratios]}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _commit() -> str | None:
    """The commit of the rotorec that runs (this interpreter's install), not of this script."""
    import rotorec.features

    try:
        where = Path(rotorec.features.__file__).parent
        found = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=where)
    except OSError:
        return None
    return found.stdout.strip() or None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--repeats", type=int, default=2, help="runs per size; the best is reported")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/out/features.json"))
    parser.add_argument("--group-events", type=int, help="prepare's --group-events (default: its own default)")
    parser.add_argument("--engine", choices=["local", "dask"], help="prepare's --engine (dask: 2 local workers)")
    parser.add_argument(
        "--threads", type=int, nargs="+", help="prepare's --threads, each pinned to as many cores, alternating within each repeat"
    )
    parser.add_argument("--work", type=Path, help="scratch folder for logs, spills and outputs (default: a temporary one)")
    parser.add_argument("--child", nargs=2, metavar=("LOG_DIR", "OUT_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        args.threads = list(dict.fromkeys(args.threads))  # each count once: runs are grouped by it
    if args.child:
        threads = None if args.threads is None else args.threads[0]
        print(json.dumps(run_one(Path(args.child[0]), Path(args.child[1]), args.group_events, args.engine, threads)))
        return

    commit = _commit()  # before the runs: the checkout may move on while they go
    rows = []
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        for size in args.sizes:
            log_dir = Path(tmp) / f"log{size}"
            log_dir.mkdir()
            make_log(log_dir / "events.parquet", size)
            runs: dict[int | None, list[dict]] = {}
            for _ in range(args.repeats):
                for threads in args.threads or [None]:
                    child = subprocess.run(
                        [sys.executable, __file__, "--child", str(log_dir), str(Path(tmp) / f"out{size}")]
                        + ([] if args.group_events is None else ["--group-events", str(args.group_events)])
                        + ([] if args.engine is None else ["--engine", args.engine])
                        + ([] if threads is None else ["--threads", str(threads)]),
                        check=True,
                        capture_output=True,
                        text=True,
                    )
                    runs.setdefault(threads, []).append(json.loads(child.stdout.strip().splitlines()[-1]))
                    shutil.rmtree(Path(tmp) / f"out{size}", ignore_errors=True)
            single = None
            for threads, tries in runs.items():
                best = min(tries, key=lambda r: r["wall_s"])
                best["log_mib"] = (log_dir / "events.parquet").stat().st_size / 2**20
                best["walls_s"] = [round(r["wall_s"], 3) for r in tries]
                single = single or best
                best["speedup"] = single["wall_s"] / best["wall_s"]
                rows.append(best)
            shutil.rmtree(log_dir)  # a 100M-event log is a few GB: one size on disk at a time

    print(f"{'events':>12} {'threads':>7} {'wall s':>8} {'events/s':>12} {'speedup':>7} {'peak RSS MiB':>13} {'B/event':>8}", end=" ")
    print(f"{'log MiB':>8}")
    for r in rows:
        print(
            f"{r['events']:>12,} {r['threads']:>7} {r['wall_s']:>8.2f} {r['events_per_s']:>12,.0f} {r['speedup']:>6.2f}x "
            f"{r['peak_rss_mib']:>13.0f} {r['peak_rss_bytes_per_event']:>8.0f} {r['log_mib']:>8.1f}"
        )
    ceiling = None
    if args.threads and max(args.threads) > 1:
        ceiling = machine_scaling(max(args.threads))
        print(f"this machine, plain NumPy work on {ceiling['cores']} processes at once: {ceiling['speedup']:.2f}x ({ceiling['speedups']})")
    report = {
        "benchmark": "features",
        "date": time.strftime("%Y-%m-%d"),
        "machine": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "commit": commit,
        "group_events": args.group_events,
        "engine": args.engine or "local",
        "arrow_threads": 1,
        "machine_scaling": ceiling,
        "results": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
