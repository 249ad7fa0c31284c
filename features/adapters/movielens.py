"""MovieLens: ML-1M/10M `ratings.dat` (`::`-separated) + `movies.dat`, or ML-20M/latest
`ratings.csv` + `movies.csv`. Label `like = rating >= 4` (docs/evaluation_details.md,
"MovieLens like label"), categorical `genre` (pipe-separated, multi-valued), catalogue = every
movie in the movies file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from rotorec.features.errors import LogReadError
from rotorec.features.reader import DEFAULT_BATCH_ROWS, LogFiles, SourceBatch
from rotorec.features.schema import LogSchema
from rotorec.features.source import LogSource

NO_GENRE = "(no genres listed)"
SCHEMA = LogSchema(
    user_id="userId",
    item_id="movieId",
    timestamp="timestamp",
    timestamp_unit="s",
    labels={"like": {"column": "rating", "threshold": 4.0, "domain": (0.5, 5.0)}},
    categorical={"genre": {"separator": "|", "max_values": 6}},
)


def _find(folder: Path, names: tuple[str, ...]) -> Path | None:
    return next((folder / n for n in names if (folder / n).is_file()), None)


def _read_movies(path: Path) -> pa.Table:
    """movieId -> genres; `.dat` files are Latin-1 with `::` (titles may contain ':')."""
    try:
        if path.name.startswith("movies.dat"):
            lines = path.read_bytes().decode("latin-1").splitlines()
            parts = [line.split("::") for line in lines if line.strip()]
            frame = pd.DataFrame({"item_id": [p[0] for p in parts], "genre": [p[-1] for p in parts]})
        else:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False).rename(columns={"movieId": "item_id", "genres": "genre"})
            frame = frame[["item_id", "genre"]]
    except (OSError, ValueError, KeyError, IndexError) as exc:
        raise LogReadError(path, f"not a MovieLens movies file ({exc})".splitlines()[0]) from exc
    frame["genre"] = frame["genre"].where(frame["genre"] != NO_GENRE, None)
    return pa.table({"item_id": pa.array(frame["item_id"].str.strip(), pa.string()), "genre": pa.array(frame["genre"], pa.string())})


def _dat_batches(path: Path, batch_rows: int) -> Iterator[SourceBatch]:
    """`UserID::MovieID::Rating::Timestamp`: read with ':' as delimiter, keep every other field."""
    read = pacsv.ReadOptions(autogenerate_column_names=True, block_size=16 << 20)
    convert = pacsv.ConvertOptions(
        include_columns=["f0", "f2", "f4", "f6"],
        column_types={f"f{i}": pa.string() for i in range(7)},
        null_values=[""],
        strings_can_be_null=True,
    )
    first = 0
    try:
        with pacsv.open_csv(path, read_options=read, parse_options=pacsv.ParseOptions(delimiter=":"), convert_options=convert) as reader:
            for batch in reader:
                renamed = batch.rename_columns(["userId", "movieId", "rating", "timestamp"])
                for start in range(0, renamed.num_rows, batch_rows):
                    piece = renamed.slice(start, batch_rows)
                    yield SourceBatch(piece, path.name, first)
                    first += piece.num_rows
    except (pa.ArrowException, OSError) as exc:
        raise LogReadError(path, f"not a MovieLens ratings.dat file ({str(exc).splitlines()[0]})") from exc


def movielens_source(path: str | Path, batch_rows: int = DEFAULT_BATCH_ROWS) -> LogSource:
    root = Path(path)
    folder = root if root.is_dir() else root.parent
    ratings = root if root.is_file() else _find(folder, ("ratings.dat", "ratings.csv", "ratings.csv.gz"))
    if ratings is None:
        raise LogReadError(root, "no ratings.dat or ratings.csv(.gz) found")
    movies_path = _find(folder, ("movies.dat", "movies.csv", "movies.csv.gz"))
    movies = _read_movies(movies_path) if movies_path else None
    genre_lookup = pd.Index(movies.column("item_id").to_numpy(zero_copy_only=False)) if movies else None

    def batches() -> Iterator[SourceBatch]:
        if ratings.name.startswith("ratings.dat"):
            raw = _dat_batches(ratings, batch_rows)
        else:
            raw = LogFiles([ratings]).iter_batches(["userId", "movieId", "rating", "timestamp"], batch_rows)
        for item in raw:
            yield dataclasses.replace(item, batch=_with_genre(item.batch, movies, genre_lookup))

    return LogSource(
        format="movielens",
        schema=SCHEMA,
        batches=batches,
        inputs=[str(p) for p in (ratings, movies_path) if p is not None],
        catalogue=movies,
        default_split="loo",
    )


def _with_genre(batch: pa.RecordBatch, movies: pa.Table | None, lookup: pd.Index | None) -> pa.RecordBatch:
    if movies is None or lookup is None:
        genre = pa.nulls(batch.num_rows, pa.string())
    else:
        keys = pc.utf8_trim_whitespace(batch.column("movieId").cast(pa.string())).to_numpy(zero_copy_only=False)
        position = lookup.get_indexer(keys)
        genre = movies.column("genre").combine_chunks().take(pa.array(np.maximum(position, 0)))
        genre = pc.if_else(pa.array(position >= 0), genre, pa.nulls(batch.num_rows, pa.string()))
    return pa.RecordBatch.from_arrays([*batch.columns, genre], names=[*batch.schema.names, "genre"])
