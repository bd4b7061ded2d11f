"""pipeline/config.py: validation, round trip, stable hash."""

import pytest

from scatterbird.pipeline.config import ConfigError, FeatureConfig


def test_round_trip_and_hash_stability():
    c = FeatureConfig(J=8, Q1=12)
    again = FeatureConfig.from_json(c.to_json())
    assert again == c and again.hash == c.hash
    # the hash is of the canonical JSON: independent of key order
    d = dict(reversed(list(c.to_dict().items())))
    assert FeatureConfig.from_dict(d).hash == c.hash


def test_hash_changes_with_every_field():
    base = FeatureConfig()
    changed = [
        base.replace(sample_rate=16000), base.replace(J=8), base.replace(Q1=12), base.replace(Q2=2),
        base.replace(max_order=1), base.replace(log_eps=1e-3), base.replace(threshold="universal-soft"),
        base.replace(threshold_order2=True), base.replace(pool_s=0.25), base.replace(grid="kymatio"),
    ]
    hashes = {c.hash for c in changed} | {base.hash}
    assert len(hashes) == len(changed) + 1


def test_hash_is_pinned():
    """A known answer: the hash of a fixed configuration must not drift between versions by accident."""
    import hashlib

    c = FeatureConfig(threshold="none")
    assert c.hash == hashlib.sha256(c.to_json().encode()).hexdigest()[:16]
    assert c.to_json().startswith('{"J":9,"Q1":8,"Q2":1,')


@pytest.mark.parametrize(
    "kw,word",
    [({"J": 0}, "J"), ({"Q1": 0}, "Q1"), ({"max_order": 3}, "max_order"), ({"threshold": "magic"}, "threshold"),
     ({"sample_rate": 10}, "sample_rate"), ({"log_eps": 0}, "log_eps"), ({"pool_s": -1}, "pool_s"),
     ({"grid": "fine"}, "grid"), ({"schema": 99}, "schema"), ({"schema": 2}, "grid='kymatio'")],
)
def test_bad_values_are_named(kw, word):
    with pytest.raises(ConfigError, match=word):
        FeatureConfig(**kw)


def test_unknown_field_is_an_error():
    with pytest.raises(ConfigError, match="unknown"):
        FeatureConfig.from_dict({"J": 9, "colour": "blue"})


def test_frame_rate():
    assert FeatureConfig(sample_rate=22050, J=9).frame_rate == pytest.approx(43.06640625)


def test_files_of_schema_2_read_back_on_kymatios_grid_with_their_hash():
    """A model or feature file written before the grid was a choice (schema 2, no `grid` key) keeps its
    hash and is computed on the grid it was made with: the bundled model of that time had 769f1d9944320c03."""
    import json

    old = {"J": 9, "Q1": 8, "Q2": 1, "log_eps": 1e-05, "max_order": 2, "pool_s": 0.0, "sample_rate": 22050,
           "schema": 2, "threshold": "risk", "threshold_order2": False}
    c = FeatureConfig.from_dict(old)
    assert c.grid == "kymatio" and c.hash == "769f1d9944320c03"
    assert json.loads(c.to_json()) == old
    assert FeatureConfig.from_json(c.to_json()) == c
    # the present schema always names its grid, and the default grid is the bandwidth one
    assert FeatureConfig().schema == 3 and json.loads(FeatureConfig().to_json())["grid"] == "bandwidth"
