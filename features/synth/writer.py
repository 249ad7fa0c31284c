"""`rotorec synth`: simulate every user and write the log, its schema and a manifest.

Folder layout:
    events.parquet     one row per slate candidate (canonical event log)
    schema.yaml        the LogSchema, so `rotorec prepare --input DIR` needs no flags
    manifest.json      config, generator version, checksums, per-split base rates and oracle NE
    diagnostics.npz    hidden truths (tastes, biases, rhythm phases): never given to models
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from rotorec.features.errors import FeaturesError
from rotorec.features.files import file_digest
from rotorec.features.schema import LabelSpec, LogSchema
from rotorec.features.splits import TemporalCutoffs
from rotorec.features.synth.config import GENERATOR_VERSION, SynthConfig
from rotorec.features.synth.oracle import calibration_summary, normalized_entropy
from rotorec.features.synth.simulate import calibrate_ctr, simulate_user
from rotorec.features.synth.world import World

TASKS = ("click", "like", "long_dwell")
LOG_COLUMNS = (
    "user_id",
    "item_id",
    "timestamp",
    "impression_id",
    "tz_offset_minutes",
    "category",
    "click",
    "like",
    "long_dwell",
    "dwell_s",
    "p_click",
    "p_like",
    "p_long_dwell",
)


def feed_schema(config: SynthConfig) -> LogSchema:
    return LogSchema(
        impression_id="impression_id",
        tz_offset_minutes="tz_offset_minutes" if config.expose_timezone else None,
        timestamp_unit="s",
        labels={task: LabelSpec() for task in TASKS},
        categorical={"category": {}},
        probabilities={task: f"p_{task}" for task in TASKS},
    )


def simulate(config: SynthConfig, progress: bool = True) -> tuple[World, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Run the simulation in memory: (world, log columns, hidden per-row/per-user terms)."""
    world = World.draw(config)
    start = int(dt.datetime.fromisoformat(config.start).replace(tzinfo=dt.timezone.utc).timestamp())
    calibrate_ctr(world, start)
    users = [
        simulate_user(world, u, start)
        for u in tqdm(range(config.users), desc="synth", unit="user", disable=None if progress else True, leave=False)
    ]
    columns = {name: np.concatenate([u[name] for u in users]) for name in LOG_COLUMNS}
    hidden = {
        "rhythm": np.concatenate([u["_rhythm"] for u in users]),
        "recency": np.concatenate([u["_recency"] for u in users]),
        "theta": np.stack([u["_theta"] for u in users]),
        "user_bias": np.concatenate([u["_bias"] for u in users]),
        "tz_offset_minutes": np.concatenate([u["_offset"] for u in users]),
    }
    return world, columns, hidden


def write_feed(config: SynthConfig, out_dir: str | Path, progress: bool = True) -> dict:
    world, columns, hidden = simulate(config, progress)
    if not len(columns["user_id"]):
        raise FeaturesError(
            f"the simulation produced no events ({config.users} user(s) over {config.days} day(s)): ask for more users or days"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(_arrow_table(columns, config), out / "events.parquet", row_group_size=1 << 18)
    feed_schema(config).to_yaml(out / "schema.yaml")
    np.savez_compressed(
        out / "diagnostics.npz",
        item_category=world.item_category,
        item_quality=world.item_quality,
        rhythm_phase=world.rhythm_phase,
        like_rhythm_phase=world.like_rhythm_phase,
        dwell_mu=world.dwell_mu,
        beta0=np.array([world.beta0]),
        **hidden,
    )
    manifest = {
        "generator": "rotorec.synth",
        "generator_version": GENERATOR_VERSION,
        "config": config.model_dump(mode="json"),
        "rows": int(len(columns["user_id"])),
        "users_with_events": int(len(np.unique(columns["user_id"]))),
        "beta0": world.beta0,
        **_oracle_report(columns, hidden, config),
        "files": {name: file_digest(out / name) for name in ("events.parquet", "schema.yaml", "diagnostics.npz")},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def _arrow_table(columns: dict[str, np.ndarray], config: SynthConfig) -> pa.Table:
    data = dict(columns)
    data["category"] = np.char.add("c", np.char.zfill(columns["category"].astype(str), 2))
    dwell = pa.array(columns["dwell_s"], pa.float32(), mask=np.isnan(columns["dwell_s"]))
    table = pa.table({name: (dwell if name == "dwell_s" else pa.array(values)) for name, values in data.items()})
    if not config.expose_timezone:
        table = table.drop_columns(["tz_offset_minutes"])
    return table


def _oracle_report(columns: dict[str, np.ndarray], hidden: dict[str, np.ndarray], config: SynthConfig) -> dict:
    """Per split (docs/evaluation_details.md, "Temporal split") and task: base rate, oracle NE,
    calibration self-check; plus how much worse a predictor blind to time (no rhythm, mean
    recency) is on clicks."""
    cutoffs = TemporalCutoffs.last_days(int(columns["timestamp"].max()))
    t = columns["timestamp"]
    masks = {
        "train": t < cutoffs.valid_start,
        "valid": (t >= cutoffs.valid_start) & (t < cutoffs.test_start),
        "test": t >= cutoffs.test_start,
        "all": np.ones(len(t), dtype=bool),
    }
    splits = {
        name: {task: calibration_summary(columns[task][mask], columns[f"p_{task}"][mask]) for task in TASKS} for name, mask in masks.items()
    }
    p = columns["p_click"]
    logit = np.log(p) - np.log1p(-p)
    blind_logit = logit - config.beta_rhythm * hidden["rhythm"] - config.beta_rec * (hidden["recency"] - hidden["recency"].mean())
    blind = 1 / (1 + np.exp(-blind_logit))
    oracle, time_blind = normalized_entropy(columns["click"], p), normalized_entropy(columns["click"], blind)
    return {
        "cutoffs": {"valid_start": cutoffs.valid_start, "test_start": cutoffs.test_start},
        "oracle_ne": {task: splits["test"][task]["oracle_ne"] for task in TASKS},
        "splits": splits,
        "time_signal": {"click_oracle_ne": oracle, "click_time_blind_ne": time_blind, "gap": time_blind - oracle},
    }
