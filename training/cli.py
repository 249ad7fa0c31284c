"""`rotorec train`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "train",
        help="train the ranker on prepared sequences",
        description="Fit the ranker; writes weights, manifest and a resumable checkpoint.",
    )
    p.add_argument("--data", required=True, type=Path, help="folder written by `rotorec prepare`")
    p.add_argument("--config", type=Path, help="YAML run config (configs/*.yaml)")
    p.add_argument("--out", required=True, type=Path, help="run folder")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, value parsed as YAML (repeatable)",
    )
    p.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(handler=_run_train)

    e = commands.add_parser(
        "evaluate",
        help="calibration and ranking metrics with CIs, report and plots",
        description="Evaluate a run on a prepared split; fits post-hoc calibration on valid.",
    )
    target = e.add_mutually_exclusive_group(required=True)
    target.add_argument("--run", type=Path, help="run folder written by `rotorec train`")
    target.add_argument("--compare", nargs="+", type=Path, metavar="RUN", help="paired comparison of runs; the first is the baseline")
    e.add_argument("--data", required=True, type=Path, help="prepared folder (prepared like the training data)")
    e.add_argument("--split", action="append", choices=["valid", "test"], help="split(s) to report (default: test)")
    e.add_argument("--out", required=True, type=Path, help="report folder (metrics.json, report.md, PNGs)")
    e.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    e.add_argument(
        "--exclude",
        choices=["none", "seen"],
        default="none",
        help="next-item retrieval: 'seen' drops history items from the catalogue (HSTU's protocol)",
    )
    e.set_defaults(handler=_run_evaluate)


def _run_train(args: argparse.Namespace) -> int:
    from rotorec.training.config import load_run_config
    from rotorec.training.trainer import train

    config = load_run_config(args.config, args.overrides)
    manifest = train(args.data, config, args.out, resume=args.resume, progress=not args.no_progress)
    print(json.dumps({"run": str(args.out), "steps": manifest["steps"], "validation": manifest["metrics"]["validation"]}, indent=2))
    return 0


def _run_evaluate(args: argparse.Namespace) -> int:
    from rotorec.training.evaluate import evaluate

    if args.compare:
        from rotorec.training.compare import compare, summary

        if len(args.compare) < 2:
            from rotorec.training.config import ConfigError

            raise ConfigError("--compare needs at least two runs")
        result = compare(
            args.compare, args.data, args.out, (args.split or ["test"])[0], seed=args.seed, exclude_seen=args.exclude == "seen"
        )
        print(summary(result))
        print(f"comparison: {args.out / 'comparison.md'}")
        return 0

    metrics = evaluate(args.run, args.data, args.out, tuple(args.split or ["test"]), seed=args.seed, exclude_seen=args.exclude == "seen")
    summary = {
        split: {task: {k: m.get(k) for k in ("ne", "oracle_ne", "calibration_ratio", "ece", "auc")} for task, m in tasks.items()}
        for split, tasks in metrics.items()
    }
    print(json.dumps({"report": str(args.out / "report.md"), "metrics": summary}, indent=2))
    return 0
