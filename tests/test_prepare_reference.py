"""`rotorec prepare` reproduces the outputs recorded from its in-memory implementation.

The reference folders under tests/data/prepare_reference were written by the in-memory prepare
(every event held at once, before events were grouped by user on disk) on the two logs built
here: a synthetic impression feed (temporal split) and a messy CSV (malformed lines, duplicates
inside and across read batches, missing and unreadable times, rare items; leave-last-out). The
grouped prepare must give the same tables, row groups, vocabularies, schema and stats, and the
same quarantined rows; only the order of quarantine rows may differ (duplicates are found after
the read, docs/prepare_at_scale.md).

Regenerate (only when a change of output is intended): python tests/test_prepare_reference.py
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rotorec.features.adapters.events import events_source
from rotorec.features.errors import FeaturesError
from rotorec.features.prepare import PrepareOptions, prepare
from rotorec.features.schema import LogSchema
from rotorec.features.spill import stable_user_order
from rotorec.features.synth.config import PRESETS, SynthConfig
from rotorec.features.synth.writer import write_feed

REFERENCE = Path(__file__).parent / "data" / "prepare_reference"
START = 1_700_000_000
VOLATILE_STATS = ("elapsed_s", "events_per_s", "timings", "inputs")


def _feed_log(folder: Path) -> Path:
    write_feed(SynthConfig(**PRESETS["tiny"], seed=3), folder, progress=False)
    return folder


def _messy_log(folder: Path) -> Path:
    """3,000 rows: a few users with long histories, repeated rows (some far apart, in later read
    batches), rows without time, bad cells, lines that are not rows, multi-valued categories."""
    rng = np.random.default_rng(11)
    lines = ["user_id,item_id,timestamp,click,tags"]
    kept: list[str] = []
    for k in range(3000):
        user = f"u{int(rng.zipf(1.6)) % 40}"
        item = f"i{int(rng.zipf(1.3)) % 300}"
        time = "" if rng.random() < 0.03 else str(1_700_000_000 + int(rng.integers(0, 40 * 86_400)))
        click = ["0", "1", "1.0", "true", "2", "x"][int(rng.choice(6, p=[0.5, 0.3, 0.05, 0.05, 0.05, 0.05]))]
        tags = "|".join(f"t{int(t)}" for t in rng.integers(0, 12, size=int(rng.integers(0, 4))))
        line = f"{user},{item},{time},{click},{tags}"
        roll = rng.random()
        if roll < 0.04 and kept:
            line = kept[int(rng.integers(0, len(kept)))]  # an exact repeat of an earlier row
        elif roll < 0.05:
            line = f'{user},"{item},{time}'  # a stray quote
        elif roll < 0.06:
            line = f"{user},{item}"  # too few fields
        kept.append(line)
        lines.append(line)
    log = folder / "log.csv"
    log.write_text("\n".join(lines) + "\n")
    return log


CASES = {
    "feed": (_feed_log, None, {"max_len": 16, "windows": "all"}),
    "messy": (_messy_log, {"labels": "click", "categorical": "tags"}, {"max_len": 8, "windows": "all", "min_count": 2, "split": "loo"}),
}


def _source(case: str, folder: Path, batch_rows: int):
    make, flags, _ = CASES[case]
    log = make(folder)
    schema = None
    if flags is not None:
        schema = LogSchema.from_flags(flags["labels"], flags["categorical"])
        schema = LogSchema.from_mapping(
            {**schema.model_dump(mode="json", exclude_defaults=True), "categorical": {"tags": {"separator": "|", "max_values": 3}}}
        )
    return events_source(log, schema, batch_rows=batch_rows)


def _prepare(case: str, folder: Path, out: Path, batch_rows: int, **options) -> None:
    prepare(_source(case, folder, batch_rows), out, PrepareOptions(**CASES[case][2], progress=False, **options))


def _stats(folder: Path) -> dict:
    stats = json.loads((folder / "stats.json").read_text())
    return {k: v for k, v in stats.items() if k not in VOLATILE_STATS}


def _quarantine_rows(folder: Path) -> list[tuple]:
    table = pq.read_table(folder / "quarantine.parquet")
    return sorted(tuple("" if v is None else str(v) for v in row.values()) for row in table.to_pylist())


def _row_groups(path: Path) -> list[int]:
    metadata = pq.ParquetFile(path).metadata
    return [metadata.row_group(k).num_rows for k in range(metadata.num_row_groups)]


def assert_same_prepared(got: Path, want: Path) -> None:
    """Same tables and row groups in every Parquet output, same JSON, same quarantined rows."""
    for path in sorted(want.rglob("*.parquet")):
        if path.name == "quarantine.parquet":
            continue
        mine = got / path.relative_to(want)
        assert pq.read_table(mine).equals(pq.read_table(path)), f"{path.relative_to(want)} differs"
        assert _row_groups(mine) == _row_groups(path), f"{path.relative_to(want)}: other row groups"
    assert json.loads((got / "schema.json").read_text()) == json.loads((want / "schema.json").read_text())
    assert _stats(got) == _stats(want)
    assert _quarantine_rows(got) == _quarantine_rows(want)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("batch_rows,group_events,threads", [(1 << 20, 1 << 30, 1), (500, 1, 1), (700, 900, 1), (700, 900, 2), (300, 1, 3)])
def test_prepare_matches_the_in_memory_reference(tmp_path: Path, case: str, batch_rows: int, group_events: int, threads: int) -> None:
    """Also with threads: batches read ahead, runs sorted and written, groups featurized and
    split files encoded beside the main thread."""
    out = tmp_path / "out"
    _prepare(case, tmp_path, out, batch_rows, group_events=group_events, threads=threads)
    assert_same_prepared(out, REFERENCE / case)


@pytest.mark.parametrize("case", sorted(CASES))
def test_threads_write_the_same_bytes(tmp_path: Path, case: str) -> None:
    """Every output file, byte for byte (quarantine included, in its order), is the one a single
    thread writes: threads change when work is done, never what is written or in which order."""
    outputs = {threads: tmp_path / f"threads{threads}" for threads in (1, 2)}
    for threads, out in outputs.items():
        _prepare(case, tmp_path, out, 300, group_events=700, threads=threads, shards=2)
    files = sorted(path.relative_to(outputs[1]) for path in outputs[1].rglob("*") if path.is_file())
    assert files == sorted(path.relative_to(outputs[2]) for path in outputs[2].rglob("*") if path.is_file())
    for name in files:
        if name.name == "stats.json":
            assert _stats(outputs[2]) == _stats(outputs[1])
        else:
            assert (outputs[2] / name).read_bytes() == (outputs[1] / name).read_bytes(), f"{name} differs"


@pytest.mark.slow
@pytest.mark.parametrize("case,threads", [("feed", 1), ("messy", 2)])
def test_the_dask_engine_on_a_two_process_cluster_matches_the_reference(tmp_path: Path, case: str, threads: int) -> None:
    """The per-group passes on a local Dask cluster of two worker processes (the spill read from
    disk by other processes, results merged in group order) give the same outputs; with threads,
    the preparing process also reads ahead, writes every run (the last one too) on a thread and
    encodes the split files on threads."""
    pytest.importorskip("distributed", reason="the dask extra is not installed (pip install 'rotorec[dask]')")
    out = tmp_path / "out"
    _prepare(case, tmp_path, out, 700, group_events=900, engine="dask", engine_workers=2, threads=threads)
    assert_same_prepared(out, REFERENCE / case)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    rows=st.lists(
        st.tuples(
            st.integers(0, 6),  # user
            st.integers(0, 9),  # item
            st.one_of(st.none(), st.integers(0, 12)),  # day (None: no time)
            st.integers(0, 3),  # impression
            st.sampled_from([0, 1, 1, 0, 7]),  # click (7 is quarantined)
        ),
        min_size=1,
        max_size=120,
    ),
    repeats=st.lists(st.integers(0, 119), max_size=20),
    batch_rows=st.integers(1, 40),
    group_events=st.integers(1, 30),
    protocol=st.sampled_from(["loo", "temporal"]),
    threads=st.sampled_from([1, 2]),
)
def test_grouped_prepare_equals_one_group(tmp_path_factory, rows, repeats, batch_rows, group_events, protocol, threads) -> None:
    """Any read batch size, group size and thread count give the outputs of one batch and one
    group on one thread."""
    rows = rows + [rows[k % len(rows)] for k in repeats]  # repeated rows anywhere later in the log
    folder = tmp_path_factory.mktemp("grouped")
    table = pa.table(
        {
            "user_id": [f"u{u}" for u, *_ in rows],
            "item_id": [f"i{i}" for _, i, *_ in rows],
            "timestamp": pa.array([None if r[2] is None else START + r[2] * 86_400 + k for k, r in enumerate(rows)], pa.int64()),
            "impression_id": pa.array([m for *_, m, _ in rows], pa.int64()),
            "click": pa.array([c for *_, c in rows], pa.int64()),
        }
    )
    pq.write_table(table, folder / "log.parquet")
    schema = LogSchema.from_flags("click", None, impression_id="impression_id")
    options = {"max_len": 4, "windows": "all", "split": protocol, "progress": False}

    def run(name: str, batch_rows: int, group_events: int, threads: int = 1) -> None:
        source = events_source(folder / "log.parquet", schema, batch_rows=batch_rows)
        prepare(source, folder / name, PrepareOptions(**options, group_events=group_events, threads=threads))

    try:
        run("one", 1 << 20, 1 << 30)
    except FeaturesError:  # e.g. a temporal split of a log without times: the grouped run must fail alike
        with pytest.raises(FeaturesError):
            run("many", batch_rows, group_events, threads)
        return
    run("many", batch_rows, group_events, threads)
    assert_same_prepared(folder / "many", folder / "one")


def _regenerate() -> None:
    import tempfile

    for case in CASES:
        with tempfile.TemporaryDirectory() as scratch:
            target = REFERENCE / case
            shutil.rmtree(target, ignore_errors=True)
            _prepare(case, Path(scratch), target, 1 << 20)
            (target / "stats.json").write_text(json.dumps(_stats(target), indent=2) + "\n")
            print(f"wrote {target}")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 2**63 - 1), max_size=300), st.sampled_from([3, 70_000, 2**40 + 1, 2**63 - 1]))
def test_the_radix_user_order_is_numpys_stable_argsort(codes: list[int], modulus: int) -> None:
    """Repeated codes included (stability is the point: a user's events keep their row order)."""
    user = np.array(codes, dtype=np.int64) % modulus
    assert np.array_equal(stable_user_order(user), np.argsort(user, kind="stable"))


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(0, 50), max_size=200), st.sampled_from([0, 10, 10_000, 2**40]))
def test_distinct_ids_with_slots_equal_numpys_unique(ids: list[int], spread: int) -> None:
    """Counting (dense ids) and sorting (ids spread far beyond the group) give np.unique's answer."""
    from rotorec.features.groups import distinct_with_slots

    values = np.array(ids, dtype=np.int64) * (spread + 1)
    want_ids, want_slots = np.unique(values, return_inverse=True)
    got_ids, got_slots = distinct_with_slots(values)
    assert got_ids.dtype == values.dtype
    np.testing.assert_array_equal(got_ids, want_ids)
    np.testing.assert_array_equal(got_slots, want_slots)


if __name__ == "__main__":
    _regenerate()
