"""Running key dictionaries: raw ids -> dense codes, batch after batch, with occurrence counts.

Raw ids (user, item, category values) are encoded as soon as a batch is read, so only small
integers are kept per event. Codes are assigned in order of first appearance, which makes them
deterministic for a given input; the final vocabulary (frequency order, min-count, PAD/OOV) is
built from the counts once the whole log has been seen.
"""

from __future__ import annotations

import numpy as np
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
    """Dense codes for keys in order of first appearance, plus how often each code occurred.

    Lookups cost the batch, not the index: integer keys are found by binary search in a sorted
    copy that new keys are merged into, text keys in a dict; rebuilding a hash index per batch
    (as a pandas Index append does) made a 100M-event log's reading quadratic in its items."""

    def __init__(self) -> None:
        self._chunks: list[np.ndarray] = []  # keys in code order, as added
        self._text: dict | None = None  # key -> code, once any key is text
        self._sorted_keys = np.zeros(0, dtype=np.int64)  # integer keys, sorted, with their codes
        self._sorted_codes = np.zeros(0, dtype=np.int64)
        self._size = 0
        self._counts = np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        return self._size

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

        Integer ids stay integers (hashing them as Python objects is ~10x slower); anything else
        is text. Once a log mixes integer and text ids (a Parquet file with int ids beside a CSV
        file with text ids) integers become their decimal text, so 7 and "7" stay one key, as the
        vocabulary's lookups treat them."""
        if keys.dtype.kind in "iu":
            fits = keys.dtype.kind == "i" or not len(keys) or keys.max() <= np.iinfo(np.int64).max
            keys = keys.astype(np.int64) if fits else _decimal_text(keys)  # uint64 above 2^63 − 1: text
        if keys.dtype.kind not in "iu" and self._text is None:  # once, when the first text ids arrive
            self._chunks = [_decimal_text(np.concatenate(self._chunks))] if self._chunks else []
            self._text = dict(zip(self._chunks[0].tolist(), range(self._size))) if self._chunks else {}
        if self._text is not None:
            keys = _decimal_text(keys)
            codes = np.fromiter((self._text.get(key, -1) for key in keys.tolist()), dtype=np.int64, count=len(keys))
        else:
            codes = np.full(len(keys), -1, dtype=np.int64)
            if len(self._sorted_keys):
                slot = np.minimum(np.searchsorted(self._sorted_keys, keys), len(self._sorted_keys) - 1)
                found = self._sorted_keys[slot] == keys
                codes[found] = self._sorted_codes[slot[found]]
        new = np.flatnonzero(codes < 0)
        if len(new):
            codes[new] = self._size + np.arange(len(new))
            self._add(keys[new], codes[new])
        return codes

    def _add(self, keys: np.ndarray, codes: np.ndarray) -> None:
        self._chunks.append(keys)
        self._size += len(keys)
        self._counts = np.concatenate([self._counts, np.zeros(len(keys), dtype=np.int64)])
        if self._text is not None:
            self._text.update(zip(keys.tolist(), codes.tolist()))
            return
        order = np.argsort(keys)
        at = np.searchsorted(self._sorted_keys, keys[order])
        self._sorted_keys = np.insert(self._sorted_keys, at, keys[order])
        self._sorted_codes = np.insert(self._sorted_codes, at, codes[order])

    @property
    def keys(self) -> np.ndarray:
        if len(self._chunks) > 1:  # joined once when read (after the log), not per batch
            self._chunks = [np.concatenate(self._chunks)]
        return self._chunks[0] if self._chunks else np.zeros(0, dtype=object)

    @property
    def counts(self) -> np.ndarray:
        return self._counts
