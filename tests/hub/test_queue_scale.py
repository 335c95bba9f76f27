"""The annotation queue at scale: the bench's fleet (bench/ranking.py) loaded in bulk is the
fleet the hub's own ingest makes, and the queue's group keys follow the hub's writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.ranking import BUNDLE, load, make_fleet, populate
from hub.storage import HubDB, open_database


def _queue(db: HubDB) -> list[tuple[str, int, str, int]]:
    return [(e.sample.id, e.copies, e.tier, e.device_rank)
            for e in db.annotation_queue(BUNDLE, None)]  # fmt: skip


def test_bench_fleet_when_loaded_in_bulk_queues_as_the_ingest_does(tmp_path: Path) -> None:
    fleet = make_fleet(240, seed=3)
    (tmp_path / "one").mkdir()
    (tmp_path / "bulk").mkdir()
    one = HubDB(open_database(None, tmp_path / "one"))
    bulk = HubDB(open_database(None, tmp_path / "bulk"))
    populate(one, fleet)
    load(bulk, fleet)
    want = _queue(one)
    assert len(want) > 100 and any(copies > 1 for _, copies, _, _ in want)
    assert {tier for _, _, tier, _ in want} >= {"corrected", "unreviewed", "confirmed"}
    assert _queue(bulk) == want
    for db in (one, bulk):
        db.close()


def test_queue_keys_when_samples_join_groups_follow_the_writes(
    hub_backend: dict[str, Any], tmp_path: Path
) -> None:
    db = HubDB(open_database(hub_backend.get("database_url"), tmp_path))
    fleet = make_fleet(60, seed=1)
    populate(db, fleet)
    rows = db._db.execute(
        "SELECT s.id, s.group_key, s.image_sha256, g.group_id FROM samples s"
        " LEFT JOIN sample_signatures g ON g.sample_id = s.id"
    ).fetchall()
    assert rows and all(r["group_key"] == r["group_id"] for r in rows)
    assert {r["group_key"] for r in rows} == {s.group for s in fleet}
    db.add_sample("plain", BUNDLE, "cam-x", 0.5, {"extra": {"needs_review": True}}, "ab" * 32)
    row = db._db.execute(
        "SELECT group_key, needs_review FROM samples WHERE id = 'plain'"
    ).fetchone()
    assert (row["group_key"], row["needs_review"]) == ("ab" * 32, 1)
    assert db.annotation_queue(BUNDLE, 1)[0].sample.id == "plain"  # needs review: first
    db.close()


def test_next_when_the_top_is_held_by_others_claims_the_first_free_entry(tmp_path: Path) -> None:
    from hub.web.annotate import NEXT_FIRST, _next_sample

    db = HubDB(open_database(None, tmp_path))
    load(db, make_fleet(300, seed=2))
    queue = [e.sample.id for e in db.annotation_queue(BUNDLE, 40)]
    held = queue[: NEXT_FIRST + 3]  # more than the first ranking pass looks at
    for sid in held:
        assert db.claim(sid, "someone", 600)
    assert _next_sample(db, BUNDLE, "me", 600) == queue[NEXT_FIRST + 3]
    assert _next_sample(db, BUNDLE, "me", 600) == queue[NEXT_FIRST + 3]  # mine now: again
    for sid in queue[NEXT_FIRST + 4 :]:  # hold the rest too: nothing left for me but mine
        db.claim(sid, "someone", 600)
    assert _next_sample(db, "nothing-here", "me", 600) is None
    db.close()
