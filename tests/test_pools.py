"""The spare images' pools: disjoint, drawn in the declared order, each with its own seed stream."""

from __future__ import annotations

from pathlib import Path

from malle.data.pools import MAX_DONORS, POOL_ORDER, SeedStream, SparePools, draw
from malle.data.sampling import Candidate


def spare(n: int) -> tuple[Candidate, ...]:
    return tuple(Candidate(Path(f"/data/c{i % 7}/img{i:04d}.jpg"), label=f"c{i % 7}", rel=f"c{i % 7}/img{i:04d}.jpg")
                 for i in range(n))


def rels(images) -> set[str]:
    return {c.rel for c in images}


def test_the_pools_are_disjoint_and_follow_the_declared_order():
    pools = SparePools(spare(300), seed=3, database_size=40, with_donors=True)
    database, donors, sources = rels(pools.database_distractors), rels(pools.donors), rels(pools.distractor_sources)
    assert len(database) == 40 and len(donors) == min(MAX_DONORS, (300 - 40) // 2)
    assert not database & donors and not (database | donors) & sources
    assert database | donors | sources == rels(spare(300))
    origins = set(sorted(sources)[:50])
    background = rels(pools.background(origins))
    assert background and not background & (database | donors | origins)
    assert POOL_ORDER == ("database_distractors", "donors", "distractor_sources", "background")


def test_a_later_pool_never_moves_an_earlier_one():
    plain = SparePools(spare(300), seed=3, database_size=40, with_donors=False)
    composite = SparePools(spare(300), seed=3, database_size=40, with_donors=True)
    assert plain.database_distractors == composite.database_distractors
    assert plain.donors == [] and composite.donors
    assert rels(composite.distractor_sources) == rels(plain.distractor_sources) - rels(composite.donors)


def test_every_draw_has_its_own_seed_stream():
    assert len({int(s) for s in SeedStream}) == len(SeedStream)
    pool = spare(100)
    picks = {stream: draw(pool, 10, seed=0, stream=stream) for stream in SeedStream}
    assert len({tuple(c.rel for c in p) for p in picks.values()}) == len(SeedStream)
    assert draw(pool, 10, 0, SeedStream.DONORS) == draw(pool, 10, 0, SeedStream.DONORS)  # replayable
    positions = [pool.index(c) for c in draw(pool, 10, 0, SeedStream.DONORS)]
    assert positions == sorted(positions)  # in the pool's order, whatever order the stream drew them in
