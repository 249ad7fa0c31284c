"""What every input format adapter hands to the pipeline: batches in canonical form + a schema.

Adapters know the quirks of one public format (MovieLens' `::`, MIND's impression strings,
Amazon's one-line-per-user files) and nothing else; validation, vocabularies, ordering and
splits are shared, so every format gets the same guarantees.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import pyarrow as pa

from rotorec.features.reader import SourceBatch
from rotorec.features.schema import LogSchema

SplitProtocol = Literal["loo", "temporal"]


@dataclass
class LogSource:
    """A readable event log: `batches()` may be called once and streams the rows."""

    format: str
    schema: LogSchema
    batches: Callable[[], Iterator[SourceBatch]]
    inputs: list[str]
    total_rows: int | None = None
    catalogue: pa.Table | None = None
    """Known items (column `item_id` plus item-level categorical columns), even never-seen ones."""
    default_split: SplitProtocol | None = None

    def protocol(self) -> SplitProtocol:
        """Impression logs split by time; next-item logs leave the last events out."""
        if self.default_split is not None:
            return self.default_split
        return "temporal" if self.schema.impression_id is not None else "loo"
