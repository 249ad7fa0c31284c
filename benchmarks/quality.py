"""The ablation suite: which position/time encoding and which mixer earns its keep, with error bars.

For each data suite it prepares the data once, trains every variant with several seeds through
the real `rotorec train`, evaluates each run with `rotorec evaluate` (which also fits the run's
post-hoc calibration), then pools the seeds: every metric is the mean over seeds with a 95 %
interval from resampling users (the same draw for all seeds), and each variant's difference to
the baseline is a seed-pooled paired bootstrap (`training.compare.pooled_delta`). A win is
claimed only when that interval excludes 0 *and* every seed agrees in sign (docs/evaluation.md, "Statistics").

Suites (docs/evaluation_details.md, "Team datasets"; docs/synthetic_feed.md):
    synthetic  the simulated feed (`rotorec synth`), temporal split, NE against the oracle NE
    movielens  ml-latest-small: next-item leave-one-out + like = rating ≥ 4 calibration
    beauty     amazon-beauty-s3rec: next-item, order only (categorical branch, no timestamps)
    mind       the MIND sample: clicks within impressions, NE, ECE, NDCG

Reference models sit in the same table, on the same split and seeds, compared with the same
paired bootstrap: popularity and SASRec (benchmarks/baselines/sasrec.py, at each scale's budget)
for next-item suites, the count model (training/baselines.py) for labelled ones. Every model
variant gets a Δ against the suite's ablation baseline and one against the reference (SASRec or
count) on the first headline metric.

Runs are kept under --work and skipped when already evaluated, so an interrupted suite resumes.
The table goes to stdout, JSON to --json, and (with --results) into benchmarks/RESULTS.md between
this suite's markers.

    python benchmarks/quality.py --scale cpu --suites synthetic movielens --jobs 2
    python benchmarks/quality.py --scale target --suites movielens beauty --variants siren_rope --jobs 2
    python benchmarks/quality.py --scale full --jobs 1          # the paper settings (GPU)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from provenance import current_commit, device_name  # benchmarks/provenance.py, beside this script
from rotorec.features.dataset import SequenceDataset
from rotorec.training.baselines import PopularityScorer, count_user_sums
from rotorec.training.bootstrap import UnitStatistics, next_item_units, point_value, pooled_delta, pooled_interval
from rotorec.training.compare import unit_statistics
from rotorec.training.retrieval import next_item_ranks
from rotorec.training.run import load_run

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
SHARED_DATA = REPO.parent / "shared" / "data"
BEGIN, END = "<!-- quality:{scale}:begin -->", "<!-- quality:{scale}:end -->"


@dataclass(frozen=True)
class Scale:
    """How much data and training each run gets. `cpu` fits the whole suite in about 1.5–2 hours on
    two cores (MovieLens histories cut to 100) and is far from converged; `full` uses the ready
    configs' settings (GPU)."""

    synth: list[str]
    prepare_max_len: dict[str, int]
    overrides: dict[str, list[str]]
    sasrec: dict[str, list[str]] = field(default_factory=dict)  # per suite: benchmarks/baselines/sasrec.py flags


SCALES = {
    "smoke": Scale(
        ["--preset", "tiny"],
        {"synthetic": 20},
        {
            "*": [
                "model.d_model=16",
                "model.heads=1",
                "model.siren.hidden=8",
                "train.batch_size=16",
                "train.max_steps=6",
                "train.eval_every=3",
                "train.checkpoint_every=6",
                "train.log_every=3",
                "model.rotrnn={heads: 2, state: 4}",
            ]
        },
    ),
    "cpu": Scale(
        ["--preset", "small", "--users", "600", "--days", "21"],
        {"synthetic": 50, "movielens": 100},
        {
            "*": [
                "model.d_model=32",
                "model.heads=2",
                "model.siren.hidden=16",
                "train.checkpoint_every=1000",
                "train.log_every=50",
                "train.patience=3",
                "model.rotrnn={heads: 4, state: 8}",
            ],
            "synthetic": ["train.batch_size=64", "train.max_steps=600", "train.eval_every=150", "optim.lr=0.003", "optim.warmup_steps=50"],
            "movielens": ["train.batch_size=32", "train.max_steps=250", "train.eval_every=125", "optim.lr=0.003", "optim.warmup_steps=25"],
            "beauty": ["train.batch_size=128", "train.max_steps=300", "train.eval_every=150", "optim.lr=0.003", "optim.warmup_steps=30"],
            "mind": ["train.batch_size=64", "train.max_steps=200", "train.eval_every=100", "optim.lr=0.003", "optim.warmup_steps=20"],
        },
        {
            "movielens": "--batch-size 32 --max-steps 250 --eval-every 125 --lr 0.003 --width 32 --heads 2".split(),
            "beauty": "--batch-size 128 --max-steps 300 --eval-every 150 --lr 0.003 --width 32 --heads 2".split(),
        },
    ),
    # Issue 15's protocol on 2 CPU cores: the shipped configs and SASRec (the paper's single head) at
    # equal width, depth, batch and step budget, selected on validation, test read once.
    "target": Scale(
        ["--preset", "small"],
        {"synthetic": 512, "movielens": 200, "mind": 200},
        {"*": ["train.checkpoint_every=1000000"], "movielens": ["train.max_steps=1000"]},
        {
            "movielens": ["--batch-size", "32", "--max-steps", "1000", "--eval-every", "150", "--patience", "5", "--minutes", "40"],
            # configs/amazon_next_item.yaml's budget: 8,000 steps with CPU bf16 autocast, for both.
            "beauty": ["--batch-size", "128", "--max-steps", "8000", "--eval-every", "500", "--patience", "4", "--minutes", "40", "--bf16"],
        },
    ),
    "full": Scale(["--preset", "small"], {"synthetic": 50}, {"*": []}),
}


@dataclass(frozen=True)
class Suite:
    name: str
    config: str
    headline: list[tuple[str, str]]  # (kind, name) keys of training.compare, compared to the baseline
    branches: list[str]  # SIREN-RoPE branches the data supports
    timestamps: bool
    baseline: str  # "rope", or "best" = the better of none/rope on the first headline metric
    dataset: str | None = None  # folder under ../shared/data; None = synthesized
    prepare: list[str] = field(default_factory=list)
    report: list[tuple[str, str]] = field(default_factory=list)  # (task or next_item, metric) columns
    baselines: tuple[str, ...] = ()  # reference models in the table: popularity, sasrec (next-item), count (tasks)


SUITES = {
    "synthetic": Suite(
        "synthetic",
        "feed_paper.yaml",
        [("ne", "click"), ("ne", "like"), ("ne", "long_dwell")],
        ["timestamp", "cyclic", "categorical"],
        True,
        "rope",
        None,
        ["--windows", "all"],
        [("click", "ne"), ("click", "oracle_ne"), ("like", "ne"), ("long_dwell", "ne"), ("click", "ece"), ("click", "auc")],
        ("count",),
    ),
    "movielens": Suite(
        "movielens",
        "movielens_next_item.yaml",
        [("next_item", "ndcg@10")],
        ["timestamp", "cyclic", "categorical"],
        True,
        "best",
        "ml-latest-small",
        ["--format", "movielens", "--windows", "all"],
        [("next_item", "ndcg@10"), ("next_item", "hr@10"), ("next_item", "mrr")],
        ("popularity", "sasrec"),
    ),
    "beauty": Suite(
        "beauty",
        "amazon_next_item.yaml",
        [("next_item", "ndcg@10")],
        ["categorical"],
        False,
        "best",
        "amazon-beauty-s3rec",
        ["--format", "amazon-seq"],
        [("next_item", "ndcg@10"), ("next_item", "hr@10"), ("next_item", "mrr")],
        ("popularity", "sasrec"),
    ),
    "mind": Suite(
        "mind",
        "mind_clicks.yaml",
        [("ne", "click")],
        ["timestamp", "cyclic", "categorical"],
        True,
        "best",
        "mind-small-sample5k",
        ["--format", "mind"],
        [("click", "ne"), ("click", "ece_adaptive"), ("click", "auc"), ("click", "ndcg@10"), ("click", "imp_auc")],
        ("count",),
    ),
}


def variants(suite: Suite) -> dict[str, list[str]]:
    """Encodings, SIREN-RoPE without each of its branches, and the recurrent mixers."""

    def siren(branches: list[str]) -> list[str]:
        return ["model.encoding=siren_rope", f"model.siren.branches=[{', '.join(branches)}]"]

    recurrent_time = ["model.rotrnn.time_conditioned=true"] if suite.timestamps else []
    chosen = {"none": ["model.encoding=none"], "rope": ["model.encoding=rope"]}
    if suite.timestamps:
        chosen["to_rope"] = ["model.encoding=to_rope"]
    chosen["siren_rope"] = siren(suite.branches)
    if len(suite.branches) > 1:
        for branch in suite.branches:
            chosen[f"siren_rope-{branch}"] = siren([b for b in suite.branches if b != branch])
    # A time-conditioned RotRNN rotates by the SIREN-RoPE angles, so it keeps the encoding.
    chosen["rotrnn"] = (siren(suite.branches) if suite.timestamps else ["model.encoding=none"]) + [
        "model.mixers=[rotrnn, rotrnn]",
        *recurrent_time,
    ]
    chosen["fprnn"] = ["model.encoding=none", "model.mixers=[fprnn, fprnn]"]
    chosen["hybrid"] = siren(suite.branches) + ["model.mixers=[rotrnn, attention]", *recurrent_time]
    return chosen


PRIORITY = ["sasrec", "none", "rope", "siren_rope", "to_rope", "hybrid", "rotrnn", "fprnn"]


def _priority(variant: str) -> int:
    return PRIORITY.index(variant) if variant in PRIORITY else len(PRIORITY)


def _rotorec(args: list[str], threads: int, log: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with log.open("a", encoding="utf-8") as sink:
        sink.write(f"$ rotorec {' '.join(args)}\n")
        sink.flush()
        done = subprocess.run(
            [sys.executable, "-m", "rotorec", "--log-level", "WARNING", *args], cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    if done.returncode:
        raise RuntimeError(f"rotorec {args[0]} failed (exit {done.returncode}); see {log}")


def prepare_data(suite: Suite, scale: Scale, work: Path, shared: Path, threads: int) -> Path:
    prepared = work / suite.name / "prepared"
    if (prepared / "schema.json").is_file():
        return prepared
    prepared.parent.mkdir(parents=True, exist_ok=True)
    log = work / suite.name / "prepare.log"
    if suite.dataset is None:
        raw = work / suite.name / "log"
        _rotorec(["synth", "--out", str(raw), "--seed", "0", "--no-progress", *scale.synth], threads, log)
    else:
        raw = shared / suite.dataset
    max_len = scale.prepare_max_len.get(suite.name)
    _rotorec(
        [
            "prepare",
            "--input",
            str(raw),
            "--out",
            str(prepared),
            "--no-progress",
            *suite.prepare,
            *(["--max-len", str(max_len)] if max_len else []),
        ],
        threads,
        log,
    )
    return prepared


def train_and_evaluate(
    suite: Suite, scale: Scale, prepared: Path, work: Path, variant: str, overrides: list[str], seed: int, threads: int
) -> Path:
    name = f"{variant}-s{seed}"
    run, report = work / suite.name / "runs" / name, work / suite.name / "reports" / name
    if (report / "metrics.json").is_file():
        return run
    settings = [*scale.overrides["*"], *scale.overrides.get(suite.name, []), *overrides, f"train.seed={seed}", "train.tensorboard=false"]
    log = work / suite.name / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    train = [
        "train",
        "--data",
        str(prepared),
        "--config",
        str(CONFIGS / suite.config),
        "--out",
        str(run),
        "--no-progress",
        *[arg for setting in settings for arg in ("--set", setting)],
    ]
    if not (run / "manifest.json").is_file():
        if (run / "checkpoint" / "state.json").is_file():
            train.append("--resume")
        else:  # killed before its first checkpoint: start it again
            shutil.rmtree(run, ignore_errors=True)
    if not (run / "manifest.json").is_file():
        _rotorec(train, threads, log)
    _rotorec(["evaluate", "--run", str(run), "--data", str(prepared), "--out", str(report)], threads, log)
    return run


def train_sasrec(suite: Suite, scale: Scale, prepared: Path, work: Path, seed: int, threads: int) -> Path:
    """benchmarks/baselines/sasrec.py on the suite's data, with this scale's budget (resumable: a
    finished run is reused)."""
    out = work / suite.name / "baselines" / f"sasrec-s{seed}"
    if (out / "ranks_test.npy").is_file():
        return out
    log = work / suite.name / "logs" / f"sasrec-s{seed}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        str(REPO / "benchmarks" / "baselines" / "sasrec.py"),
        "--data",
        str(prepared),
        "--out",
        str(out),
        "--seed",
        str(seed),
        "--threads",
        str(threads),
        *scale.sasrec.get(suite.name, []),
    ]
    with log.open("a", encoding="utf-8") as sink:
        done = subprocess.run(command, cwd=REPO, stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    if done.returncode:
        raise RuntimeError(f"sasrec failed (exit {done.returncode}); see {log}")
    return out


def baseline_statistics(suite: Suite, name: str, prepared: Path, work: Path, seeds: list[int]) -> list[UnitStatistics] | None:
    """Per seed, a baseline's statistics on the test split (popularity and count are deterministic:
    one computation stands for every seed); None while a SASRec seed is missing."""
    train, test = SequenceDataset(prepared, "train"), SequenceDataset(prepared, "test")
    if name == "popularity":
        return [UnitStatistics({}, next_item_units(next_item_ranks(PopularityScorer(train), test)[0]))] * len(seeds)
    if name == "count":
        return [UnitStatistics({task: count_user_sums(train, test, task) for task in train.schema.tasks}, {})] * len(seeds)
    folders = [work / suite.name / "baselines" / f"sasrec-s{seed}" for seed in seeds]
    if not all((folder / "ranks_test.npy").is_file() for folder in folders):
        return None
    return [UnitStatistics({}, next_item_units(np.load(folder / "ranks_test.npy"))) for folder in folders]


def _metric(metrics: dict, column: tuple[str, str]) -> float:
    where, name = column
    return float(metrics["test"].get(where, {}).get(name, float("nan")))


def summarise(suite: Suite, prepared: Path, work: Path, chosen: dict[str, list[str]], seeds: list[int], bootstrap_seed: int) -> dict:
    """Per variant: seed means of the report columns, pooled intervals of the headline metrics, and
    the pooled paired delta of each headline metric against the baseline."""
    dataset = SequenceDataset(prepared, "test")
    statistics: dict[str, list[UnitStatistics]] = {}
    table: dict[str, dict] = {}
    missing: dict[str, int] = {}
    for variant in chosen:
        folders = [work / suite.name / "runs" / f"{variant}-s{seed}" for seed in seeds]
        reports = [work / suite.name / "reports" / f"{variant}-s{seed}" / "metrics.json" for seed in seeds]
        if not all(path.is_file() for path in reports):
            missing[variant] = sum(not path.is_file() for path in reports)
            continue
        metrics = [json.loads(path.read_text()) for path in reports]
        statistics[variant] = [unit_statistics(load_run(folder), dataset) for folder in folders]
        table[variant] = {
            "columns": {f"{w}.{n}": float(np.mean([_metric(m, (w, n)) for m in metrics])) for w, n in suite.report},
            "headline": {
                f"{kind}.{name}": pooled_interval(statistics[variant], (kind, name), bootstrap_seed) for kind, name in suite.headline
            },
            "steps": [json.loads((folder / "manifest.json").read_text())["steps"] for folder in folders],
        }
    reference = None
    for name in suite.baselines:
        runs = baseline_statistics(suite, name, prepared, work, seeds)
        if runs is None:
            missing[name] = len(seeds)
            continue
        statistics[name] = runs
        keys = [key for key in suite.headline if _has(runs[0], key)]
        table[name] = {
            "columns": {f"{w}.{n}": _baseline_column(runs, (w, n)) for w, n in suite.report},
            "headline": {f"{kind}.{metric}": pooled_interval(runs, (kind, metric), bootstrap_seed) for kind, metric in keys},
            "steps": [],
            "reference": True,
        }
        if reference is None or name in ("sasrec", "count"):
            reference = name if _has(runs[0], suite.headline[0]) else reference
    if not table:
        return {"variants": {}, "baseline": None, "reference": None, "incomplete": missing}
    baseline = suite.baseline
    if baseline == "best":
        kind, name = suite.headline[0]
        lower_is_better = kind == "ne"
        candidates = [v for v in ("none", "rope") if v in table and not table[v].get("reference")]
        baseline = min(
            candidates,
            default=None,  # None: neither ran (e.g. --variants siren_rope), no ablation Δ
            key=lambda v: table[v]["headline"][f"{kind}.{name}"]["value"] * (1 if lower_is_better else -1),
        )
    first = suite.headline[0]
    for variant, entry in table.items():
        if entry.get("reference"):
            continue
        if variant != baseline and baseline in statistics:
            entry["delta"] = {
                f"{kind}.{name}": pooled_delta(statistics[baseline], statistics[variant], (kind, name), bootstrap_seed)
                for kind, name in suite.headline
            }
        if reference is not None:
            entry["versus_reference"] = pooled_delta(statistics[reference], statistics[variant], first, bootstrap_seed)
    return {"variants": table, "baseline": baseline, "reference": reference, "incomplete": missing}


def _has(stats: UnitStatistics, key: tuple[str, str]) -> bool:
    return key[1] in (stats.tasks if key[0] == "ne" else stats.next_item)


def _baseline_column(runs: list[UnitStatistics], column: tuple[str, str]) -> float:
    """A report column a baseline's statistics give (next-item metrics, NE); NaN for the rest."""
    where, name = column
    key = ("next_item", name) if where == "next_item" else ("ne", where)
    if name != "ne" and where != "next_item" or not _has(runs[0], key):
        return float("nan")
    return float(np.mean([point_value(stats, key) for stats in runs]))


def markdown(suite: Suite, summary: dict, seeds: list[int]) -> str:
    columns = [f"{w}.{n}" for w, n in suite.report]
    headline = [f"{kind}.{name}" for kind, name in suite.headline]
    reference = summary.get("reference")
    versus = [f"Δ {headline[0]} vs `{reference}` [95 % CI], verdict"] if reference else []
    lines = [
        f"**{suite.name}** (ablation baseline `{summary['baseline']}`; reference `{reference}`; {len(seeds)} seeds; "
        "means over seeds; reference models in *italics*):",
        "",
        "| variant | "
        + " | ".join(columns)
        + " | "
        + " | ".join([f"Δ {h} vs baseline [95 % CI], verdict" for h in headline] + versus)
        + " | steps |",
        "|---|" + "---:|" * len(columns) + "---|" * (len(headline) + len(versus)) + "---|",
    ]

    def verdict(delta: dict | None) -> str:
        return "—" if delta is None else (f"{delta['delta']:+.4f} [{delta['ci95'][0]:+.4f}, {delta['ci95'][1]:+.4f}] {delta['verdict']}")

    for variant, entry in summary["variants"].items():
        cells = ["—" if np.isnan(entry["columns"][c]) else f"{entry['columns'][c]:.4f}" for c in columns]
        if entry.get("reference"):
            cells += ["reference"] * (len(headline) + len(versus))
            name = f"*{variant}*"
        else:
            cells += ["baseline" if variant == summary["baseline"] else verdict(entry.get("delta", {}).get(key)) for key in headline]
            cells += [verdict(entry.get("versus_reference"))] if versus else []
            name = variant
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {'/'.join(map(str, entry['steps'])) or '—'} |")
    if summary["incomplete"]:
        lines += [
            "",
            "Not in the table (runs missing of "
            + str(len(seeds))
            + " seeds): "
            + ", ".join(f"`{v}` ({n})" for v, n in summary["incomplete"].items())
            + ".",
        ]
    return "\n".join(lines) + "\n"


def write_results(path: Path, scale: str, body: str) -> None:
    """Replace this scale's block in RESULTS.md (appending it the first time)."""
    begin, end = BEGIN.format(scale=scale), END.format(scale=scale)
    text = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmark results\n"
    block = f"{begin}\n{body}{end}"
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="cpu")
    parser.add_argument("--suites", nargs="+", choices=sorted(SUITES), default=list(SUITES))
    parser.add_argument("--variants", nargs="+", help="only these variants (default: all of each suite)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--work", type=Path, default=REPO / "benchmarks" / "out" / "quality")
    parser.add_argument("--shared", type=Path, default=SHARED_DATA, help="the team datasets (../shared/data)")
    parser.add_argument("--json", type=Path, default=None, help="default: WORK/quality.json")
    parser.add_argument("--results", type=Path, default=None, help="update this RESULTS.md with the tables")
    parser.add_argument("--bootstrap-seed", type=int, default=0)
    parser.add_argument("--no-sasrec", action="store_true", help="leave the SASRec baseline out (popularity and count stay)")
    parser.add_argument(
        "--summarise-only", action="store_true", help="train nothing: tabulate the runs already finished (incomplete variants are listed)"
    )
    args = parser.parse_args()
    scale = SCALES[args.scale]
    work = args.work / args.scale
    started = time.time()

    plans = {}
    for name in args.suites:
        suite = SUITES[name]
        if suite.dataset is not None and not (args.shared / suite.dataset).is_dir():
            print(f"skipping {name}: {args.shared / suite.dataset} is absent (team dataset, never in the repository)")
            continue
        chosen = {v: o for v, o in variants(suite).items() if not args.variants or v in args.variants}
        plans[name] = (suite, prepare_data(suite, scale, work, args.shared, args.threads * args.jobs), chosen)

    # Most informative first (baselines and the full model, all seeds, every suite; then the
    # recurrent mixers and the branch ablations), so an interrupted suite has complete variants.
    trained_baselines = {
        name: ["sasrec"] if "sasrec" in suite.baselines and not args.no_sasrec else [] for name, (suite, _, _) in plans.items()
    }
    jobs = (
        []
        if args.summarise_only
        else sorted(
            [
                (suite, prepared, variant, overrides, seed)
                for suite, prepared, chosen in plans.values()
                for variant, overrides in chosen.items()
                for seed in args.seeds
            ]
            + [
                (suite, prepared, name, None, seed)
                for suite, prepared, _ in plans.values()
                for name in trained_baselines[suite.name]
                for seed in args.seeds
            ],
            key=lambda job: (_priority(job[2]), job[4]),
        )
    )
    failures = []
    with ThreadPoolExecutor(max_workers=args.jobs) as pool, tqdm(total=len(jobs), desc="runs", unit="run") as bar:
        futures = {
            (
                pool.submit(train_sasrec, suite, scale, prepared, work, seed, args.threads)
                if overrides is None
                else pool.submit(train_and_evaluate, suite, scale, prepared, work, variant, overrides, seed, args.threads)
            ): (suite.name, variant, seed)
            for suite, prepared, variant, overrides, seed in jobs
        }
        for future in as_completed(futures):
            bar.update(1)
            try:
                future.result()
            except RuntimeError as exc:
                failures.append(f"{futures[future]}: {exc}")
                tqdm.write(f"FAILED {futures[future]}: {exc}")

    summaries, tables = {}, []
    for name, (suite, prepared, chosen) in plans.items():
        summaries[name] = summarise(suite, prepared, work, chosen, args.seeds, args.bootstrap_seed)
        tables.append(markdown(suite, summaries[name], args.seeds))
    header = (
        f"`python benchmarks/quality.py --scale {args.scale} --suites {' '.join(plans)} --seeds "
        f"{' '.join(map(str, args.seeds))} --jobs {args.jobs} --threads {args.threads}` — device: "
        f"{device_name(torch.device('cuda' if torch.cuda.is_available() else 'cpu'))}, torch {torch.__version__}; "
        f"date {time.strftime('%Y-%m-%d')}; commit {current_commit() or 'unknown'}; wall {(time.time() - started) / 60:.0f} min.\n\n"
    )
    body = header + "\n".join(tables) + ("\nFailed runs: " + "; ".join(failures) + "\n" if failures else "")
    print(body)
    out = args.json or work / "quality.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "scale": args.scale,
                "seeds": args.seeds,
                "commit": current_commit() or "unknown",
                "date": time.strftime("%Y-%m-%d"),
                "suites": summaries,
                "failures": failures,
            },
            indent=2,
        )
    )
    print(f"wrote {out}")
    if args.results:
        write_results(args.results, args.scale, body)
        print(f"updated {args.results}")
    if failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
