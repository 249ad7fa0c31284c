"""`benchmarks/quality.py` end to end at its smoke scale, so the ablation suite cannot rot.

The numbers at this scale mean nothing (six training steps); what is checked is the machinery:
every variant trains and evaluates through the real CLI, seeds pool, the baseline has no delta,
identical runs would give a zero delta, the table lands between its markers in a RESULTS file
without disturbing the rest, and a second invocation reuses the finished runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow  # runs benchmarks/quality.py in a subprocess


def _suite(work: Path, results: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "quality.py"),
            "--scale",
            "smoke",
            "--suites",
            "synthetic",
            "--variants",
            "rope",
            "siren_rope-cyclic",
            "--seeds",
            "0",
            "1",
            "--work",
            str(work),
            "--results",
            str(results),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def test_quality_suite_pools_seeds_and_writes_its_table(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n## Other section\n\nkept\n")
    done = _suite(tmp_path / "work", results)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((tmp_path / "work" / "smoke" / "quality.json").read_text())["suites"]["synthetic"]
    assert summary["baseline"] == "rope" and summary["reference"] == "count"
    variants = summary["variants"]
    assert set(variants) == {"rope", "siren_rope-cyclic", "count"}
    assert "delta" not in variants["rope"] and variants["count"]["reference"]
    for task in ("click", "like", "long_dwell"):  # the count model's NE is in the table beside the models'
        assert 0 < variants["count"]["headline"][f"ne.{task}"]["value"] < 2
    versus = variants["siren_rope-cyclic"]["versus_reference"]
    assert len(versus["per_seed"]) == 2 and versus["ci95"][0] <= versus["ci95"][1]
    for name in ("siren_rope-cyclic",):
        delta = variants[name]["delta"]["ne.click"]
        assert len(delta["per_seed"]) == 2 and abs(delta["delta"] - sum(delta["per_seed"]) / 2) < 1e-12
        assert delta["ci95"][0] <= delta["ci95"][1]
        headline = variants[name]["headline"]["ne.click"]
        assert headline["ci95"][0] <= headline["value"] <= headline["ci95"][1]
    text = results.read_text()
    assert "kept" in text and text.count("<!-- quality:smoke:begin -->") == 1 and "| siren_rope-cyclic |" in text and "| *count* |" in text

    # Finished runs are reused: the second invocation trains nothing and rewrites the same block.
    runs = tmp_path / "work" / "smoke" / "synthetic" / "runs"
    stamps = {p: p.stat().st_mtime_ns for p in runs.glob("*/model.safetensors")}
    again = _suite(tmp_path / "work", results)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in runs.glob("*/model.safetensors")} == stamps
    assert results.read_text().count("<!-- quality:smoke:begin -->") == 1
