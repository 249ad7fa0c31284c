"""Vocabularies: reserved ids, frequency order, min-count, persistence, OOV lookups."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from features.vocab import OOV, PAD, RESERVED, Vocabulary


def test_ids_follow_count_then_key_and_rare_keys_share_oov(tmp_path: Path) -> None:
    keys = np.array(["b", "a", "c", "d"], dtype=object)
    counts = np.array([5, 5, 9, 1])
    vocab, code_to_id = Vocabulary.build("item", keys, counts, min_count=2)
    assert vocab.keys.tolist() == ["c", "a", "b"]
    assert code_to_id.tolist() == [RESERVED + 2, RESERVED + 1, RESERVED, OOV]
    assert vocab.size == RESERVED + 3 and PAD == 0 and OOV == 1
    vocab.save(tmp_path)
    loaded = Vocabulary.load(tmp_path, "item")
    assert loaded.lookup(["a", "zzz", "c"]).tolist() == [RESERVED + 1, OOV, RESERVED]
    assert loaded.key_of(np.array([0, 1, 2])).tolist() == ["<pad>", "<oov>", "c"]


def test_always_keep_admits_catalogue_keys_without_events() -> None:
    vocab, code_to_id = Vocabulary.build("item", np.array([10, 11]), np.array([3, 0]), 1, np.array([False, True]))
    assert vocab.keys.tolist() == ["10", "11"] and code_to_id.tolist() == [RESERVED, RESERVED + 1]


def test_integer_keys_are_looked_up_as_strings() -> None:
    vocab, _ = Vocabulary.build("item", np.array([7, 8]), np.array([1, 2]))
    assert vocab.lookup([7, "8", 9]).tolist() == [RESERVED + 1, RESERVED, OOV]
