"""The team's public datasets (../shared/data): counts must match the published ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import shared_dataset
from rotorec.features.adapters import adapter
from rotorec.features.prepare import PrepareOptions, prepare

pytestmark = pytest.mark.realdata


def _prepare(fmt: str, name: str, out: Path, **options) -> dict:
    return prepare(adapter(fmt)(shared_dataset(name)), out, PrepareOptions(progress=False, **options))


def test_ml_latest_small(tmp_path: Path) -> None:
    stats = _prepare("movielens", "ml-latest-small", tmp_path / "ml")
    assert (stats["users"], stats["events"], stats["quarantined"]) == (610, 100_836, 0)
    assert stats["catalogue_items"] == 9_742 and stats["items"] == 9_724
    assert round(stats["label_rate"]["like"], 3) == 0.482
    assert stats["splits"]["test"]["targets"] == 610 and stats["splits"]["valid"]["targets"] == 610


def test_amazon_beauty(tmp_path: Path) -> None:
    stats = _prepare("amazon-seq", "amazon-beauty-s3rec", tmp_path / "beauty", max_len=50)
    assert (stats["users"], stats["events"], stats["items"]) == (22_363, 198_502, 12_101)
    assert stats["vocab_sizes"]["attribute"] == 2 + 637


def test_mind_sample(tmp_path: Path) -> None:
    stats = _prepare("mind", "mind-small-sample5k", tmp_path / "mind")
    assert (stats["impressions"], stats["positives"]["click"], stats["users"]) == (5_000, 7_542, 4_637)
    assert stats["splits"]["test"]["targets"] == 39_375 and stats["splits"]["test"]["positives"]["click"] == 1_489
