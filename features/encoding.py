"""Running key dictionaries: raw ids -> dense codes, batch after batch, with occurrence counts.

Raw ids (user, item, category values) are encoded as soon as a batch is read, so only small
integers are kept per event. Codes are assigned in order of first appearance, which makes them
deterministic for a given input; the final vocabulary (frequency order, min-count, PAD/OOV) is
built from the counts once the whole log has been seen.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc


def canonical_keys(values: pa.Array) -> pa.Array:
    """Ids as the vocabulary stores them: integral floats become ints, everything else as is.

    A Parquet writer that saw a null turns an int id column into floats; 7.0 must still be the
    same item as 7 (and as the string "7" a client sends), so integral floats are cast back.
    """
    if pa.types.is_floating(values.type):
        # NaN is no id at all; integral floats are ints; anything else keeps its decimal text.
        values = pc.if_else(pc.is_nan(values), pa.nulls(len(values), values.type), values)
        finite = values.drop_null().to_numpy()
        if np.all(finite == np.floor(finite)):
            return pc.cast(values, pa.int64(), safe=False)
        return pc.cast(values, pa.string())
    if pa.types.is_dictionary(values.type):
        return values.dictionary_decode()
    if pa.types.is_large_string(values.type):
        return values.cast(pa.string())
    return values


def _decimal_text(keys: np.ndarray) -> np.ndarray:
    """Integer keys as their decimal text (object array); text keys unchanged."""
    return keys.astype(str).astype(object) if keys.dtype.kind in "iu" else keys


class RunningIndex:
    """Dense codes for keys in order of first appearance, plus how often each code occurred."""

    def __init__(self) -> None:
        self._index: pd.Index | None = None  # typed by the first keys seen (int64 or object)
        self._counts = np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        return 0 if self._index is None else len(self._index)

    def encode(self, values: pa.Array) -> np.ndarray:
        """Codes (int64) for non-null `values`; new keys get the next free codes.

        Encoding does not count: rows may still be quarantined, and only the events that pass
        validation should decide which keys are frequent enough for the vocabulary.
        """
        if len(values) == 0:
            return np.zeros(0, dtype=np.int64)
        encoded = values.dictionary_encode()
        batch_keys = encoded.dictionary.to_numpy(zero_copy_only=False)
        positions = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        key_codes = self._lookup_or_add(batch_keys)
        return key_codes[positions]

    def count(self, codes: np.ndarray, sign: int = 1) -> None:
        """Record one occurrence per code, or take it back with sign −1 (codes < 0 mean 'no value'
        and are skipped)."""
        codes = codes[codes >= 0]
        if len(codes):
            self._counts += sign * np.bincount(codes, minlength=len(self._counts)).astype(np.int64)

    def add_keys(self, keys: np.ndarray) -> np.ndarray:
        """Register keys without counting an occurrence (catalogue items never seen in events)."""
        keys = np.asarray(keys)
        distinct, positions = np.unique(keys, return_inverse=True)
        return self._lookup_or_add(distinct)[positions]

    def _lookup_or_add(self, keys: np.ndarray) -> np.ndarray:
        """Codes for distinct `keys`; unseen ones take the next free codes in the given order.

        Integer ids stay in an int64 index (hashing them as Python objects is ~10x slower);
        anything else is an object index. Once a log mixes integer and text ids (a Parquet file
        with int ids beside a CSV file with text ids) integers become their decimal text, so 7
        and "7" stay one key, as the vocabulary's lookups treat them."""
        if keys.dtype.kind in "iu":
            fits = keys.dtype.kind == "i" or not len(keys) or keys.max() <= np.iinfo(np.int64).max
            keys = keys.astype(np.int64) if fits else _decimal_text(keys)  # uint64 above 2^63 − 1: text
        if self._index is None:
            self._index = pd.Index(keys[:0])
        if self._index.dtype != keys.dtype:
            if self._index.dtype.kind in "iu":  # once, when the first text ids arrive
                self._index = pd.Index(_decimal_text(self._index.to_numpy()), dtype=object)
            keys = _decimal_text(keys)
        codes = np.asarray(self._index.get_indexer(keys), dtype=np.int64)
        new = np.flatnonzero(codes < 0)
        if len(new):
            codes[new] = len(self._index) + np.arange(len(new))
            self._index = self._index.append(pd.Index(keys[new], dtype=self._index.dtype))
            self._counts = np.concatenate([self._counts, np.zeros(len(new), dtype=np.int64)])
        return codes

    @property
    def keys(self) -> np.ndarray:
        return np.zeros(0, dtype=object) if self._index is None else self._index.to_numpy()

    @property
    def counts(self) -> np.ndarray:
        return self._counts
