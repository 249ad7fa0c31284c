"""Each public format, on tiny files written here in that format's original layout."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow.parquet as pq

from rotorec.features.adapters import adapter
from rotorec.features.prepare import PrepareOptions, prepare
from rotorec.features.vocab import Vocabulary

OPTIONS = PrepareOptions(progress=False, max_len=20)


def _targets(out: Path, split: str) -> list[dict]:
    rows = []
    for window in pq.read_table(out / f"{split}.parquet").to_pylist():
        rows += [{k: window[k][i] for k in ("item", "row", "label_like") if k in window} for i, t in enumerate(window["target"]) if t]
    return rows


def test_movielens_1m_dat_files(tmp_path: Path) -> None:
    (tmp_path / "ratings.dat").write_text(
        "1::1193::5::978300760\n1::661::3::978302109\n1::914::4::978301968\n2::1193::4::978298413\n2::1194::four::978298414\n"
    )
    (tmp_path / "movies.dat").write_bytes(
        "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
        "661::James and the Giant Peach: The Movie (1996)::Animation|Children's|Musical\n"
        "914::My Fair Lady (1964)::Musical|Romance\n"
        "3000::Am\xe9lie (2001)::Comedy|Romance\n".encode("latin-1")
    )
    stats = prepare(adapter("movielens")(tmp_path), tmp_path / "out", OPTIONS)
    assert (stats["users"], stats["events"], stats["catalogue_items"]) == (2, 4, 4)
    assert stats["quarantine_reasons"] == {"bad_label": 1}
    assert stats["positives"]["like"] == 3  # ratings 5, 4, 4 (3 is not a like)
    assert stats["vocab_sizes"]["item"] == 2 + 4  # the never-rated movie 3000 is in the catalogue
    genre = Vocabulary.load(tmp_path / "out" / "vocab", "genre")
    assert {"Drama", "Musical", "Children's"} <= set(genre.keys)
    items = pq.read_table(tmp_path / "out" / "items.parquet").to_pylist()
    peach = next(i for i in items if i["key"] == "661")
    assert sorted(genre.key_of([g for g in peach["cat_genre"] if g])) == ["Animation", "Children's", "Musical"]
    # User 1: timestamps order 1193 (…760), 914 (…968), 661 (…109): the test target is 661, rated 3.
    test = _targets(tmp_path / "out", "test")
    item_vocab = Vocabulary.load(tmp_path / "out" / "vocab", "item")
    assert [item_vocab.key_of([t["item"]])[0] for t in test] == ["661"] and test[0]["label_like"] == 0


def test_movielens_csv_files(tmp_path: Path) -> None:
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,3.5,964981247\n1,6,9.0,964982224\n")
    (tmp_path / "movies.csv").write_text(
        "movieId,title,genres\n1,Toy Story (1995),Adventure|Animation\n"
        '3,"Grumpier Old Men, The (1995)",Comedy|Romance\n6,Heat (1995),(no genres listed)\n'
    )
    stats = prepare(adapter("movielens")(tmp_path), tmp_path / "out", OPTIONS)
    assert stats["events"] == 2 and stats["quarantine_reasons"] == {"bad_label": 1}  # 9.0 is outside 0.5..5
    assert stats["positives"]["like"] == 1  # 3.5 is negative (docs/evaluation_details.md, "MovieLens like label")


def test_mind_behaviors_and_news(tmp_path: Path) -> None:
    behaviors = (
        "1\tU1\t11/11/2019 9:05:58 AM\tN1 N2\tN3-1 N4-0\n"
        "2\tU2\t11/12/2019 2:14:46 PM\t\tN3-0 N5-1 N6-0\n"
        "3\tU1\t11/13/2019 11:00:00 PM\tN1 N2\tN7-0 N8-1\n"
        "4\tU3\tnot a time\tN9\tN3-1\n"
    )
    (tmp_path / "behaviors.tsv").write_text(behaviors)
    with gzip.open(tmp_path / "news.tsv.gz", "wt") as handle:
        handle.write("N3\tsports\tsoccer\tTitle\tAbstract\turl\t[]\t[]\nN5\tnews\tnewsus\tT\tA\tu\t[]\t[]\n")
    stats = prepare(adapter("mind")(tmp_path), tmp_path / "out", OPTIONS)
    assert stats["impressions"] == 3 and stats["positives"]["click"] == 3
    assert stats["quarantine_reasons"] == {"bad_timestamp": 1}  # the impression with an unreadable time
    assert stats["events_without_timestamp"] == 3  # U1's two history clicks (once, not per impression) + U3's
    assert stats["events"] == 3 + 7
    category = Vocabulary.load(tmp_path / "out" / "vocab", "category")
    assert set(category.keys) == {"sports", "news"}


def test_amazon_sequences_with_attributes(tmp_path: Path) -> None:
    (tmp_path / "Beauty.txt").write_text("1 1 2 3 4\n2 2 5 6\n3 7 8\n")
    with gzip.open(tmp_path / "Beauty_item2attributes.json.gz", "wt") as handle:
        json.dump({"1": [10, 11], "2": [11], "5": [12, 13, 14], "9": [15]}, handle)
    stats = prepare(adapter("amazon-seq")(tmp_path), tmp_path / "out", OPTIONS)
    assert (stats["users"], stats["events"], stats["events_without_timestamp"]) == (3, 9, 9)
    assert stats["split"]["protocol"] == "loo"
    test = _targets(tmp_path / "out", "test")
    item_vocab = Vocabulary.load(tmp_path / "out" / "vocab", "item")
    assert sorted(item_vocab.key_of([t["item"] for t in test]).tolist()) == ["4", "6"]  # user 3 only trains
    assert stats["catalogue_items"] == 4 and stats["vocab_sizes"]["item"] == 2 + 9


def test_kuairand_log_through_the_shipped_schema(tmp_path: Path) -> None:
    from rotorec.features.adapters.events import events_source
    from rotorec.features.schema import LogSchema

    (tmp_path / "log_standard_pure.csv").write_text(
        "user_id,video_id,date,hourmin,time_ms,is_click,is_like,is_follow,long_view,tab\n"
        "0,100,20220408,1600,1649404800000,1,0,0,1,1\n"
        "0,101,20220408,1601,1649404860000,0,0,0,0,1\n"
        "0,102,20220409,900,1649466000000,1,1,0,0,2\n"
    )
    schema = LogSchema.from_yaml(Path(__file__).resolve().parents[1] / "configs" / "schemas" / "kuairand.yaml")
    stats = prepare(events_source(tmp_path / "log_standard_pure.csv", schema), tmp_path / "out", OPTIONS)
    assert stats["timestamp_unit"] == "ms" and stats["first_timestamp"] == 1_649_404_800
    assert stats["positives"] == {"click": 2, "like": 1, "long_view": 1}
    window = pq.read_table(tmp_path / "out" / "test.parquet").to_pylist()[0]
    assert window["tz_offset_minutes"] == [480, 480, 480]
    assert window["second_of_day"][0] == 16 * 3600  # 08:00 UTC is 16:00 in Beijing
