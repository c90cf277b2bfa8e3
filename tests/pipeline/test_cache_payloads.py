"""Task payloads by reference: content-addressed files under CACHE/payloads/, read back by CachedTask.data."""

from __future__ import annotations

import json
from pathlib import Path

from segpipe.cache.targets import PAYLOAD_REF, CachedTask, store_payload


class _Probe(CachedTask):
    kind = "probe"


def test_payload_round_trips_and_nesting_stays_small(tmp_path: Path) -> None:
    inner = {"plan": "p.json", "shard": 3, "names": [f"img_{i:05d}.jpg" for i in range(500)]}
    inner_ref = store_payload(tmp_path, inner)
    outer = {"shards": [["k", inner_ref]] * 300}
    outer_ref = store_payload(tmp_path, outer)
    assert inner_ref.startswith(PAYLOAD_REF) and len(inner_ref) < 100
    # The outer payload holds 300 references, not 300 copies of the inner one.
    assert (tmp_path / outer_ref[1:]).stat().st_size < 300 * 100
    assert _Probe(key="a", cache=str(tmp_path), payload=outer_ref).data == outer
    assert _Probe(key="b", cache=str(tmp_path), payload=inner_ref).data == inner
    assert store_payload(tmp_path, dict(reversed(list(inner.items())))) == inner_ref  # content-addressed
    assert _Probe(key="c", cache=str(tmp_path), payload=json.dumps({"x": 1})).data == {"x": 1}  # inline still works
