"""data/bootstrap.py's mixer: honest labels (no bird in a negative; a main bird over the SNR floor and
mostly inside a positive), augmentations alike for both classes, hard-negative draws, the recipe's
category column, and the fold writer; over tiny fake segments, no network."""

from __future__ import annotations

import csv
import json
from dataclasses import fields

import numpy as np
import pytest

from scatterbird.data.augment import active_power
from scatterbird.data.bootstrap import (
    BED_MIN_S,
    HARD_CATEGORY_WEIGHTS,
    RECIPE_COLUMNS,
    MixOptions,
    Segment,
    SourceRow,
    mix_clip,
    write_fold,
)
from scatterbird.errors import BootstrapError, OptionError

SR = 16000
DURATION = 2.0
N = int(SR * DURATION)
BIRD_CATEGORIES = {"bird_call", "bird_soundscape", "synthetic_bird"}


def segment(name: str, hasbird: int, category: str, audio: np.ndarray, dur: float | None = None) -> Segment:
    row = SourceRow(hasbird, "fake-data", "1", f"usr/share/fake/{name}.wav", 0.0, dur, category, "")
    return Segment(row, 0, (audio / np.abs(audio).max()).astype(np.float32), SR, SR)


def fake_segments() -> tuple[list[Segment], list[Segment]]:
    rng = np.random.default_rng(0)
    t = np.arange(int(0.5 * SR)) / SR

    def burst(f: float) -> np.ndarray:
        return np.sin(2 * np.pi * f * t) * np.hanning(t.size)

    birds = [
        segment("warbler", 1, "bird_call", burst(3000) + 0.3 * burst(6000)),
        segment("dove", 1, "bird_call", np.concatenate([burst(700), np.zeros(800), burst(650)])),
        segment("dawn", 1, "bird_soundscape", rng.standard_normal(6 * SR) * 0.1 + np.tile(burst(4000), 12), dur=6.0),
    ]
    others = [
        segment("flute", 0, "music", burst(1500)),
        segment("beep", 0, "ui", burst(2500)),
        segment("engine", 0, "vehicle", rng.standard_normal(SR) * np.hanning(SR)),
        segment("door", 0, "other", rng.standard_normal(SR // 4)),
        segment("rain", 0, "weather", rng.standard_normal(7 * SR), dur=7.0),
    ]
    return birds, others


@pytest.fixture(scope="module")
def segments():
    return fake_segments()


@pytest.fixture(scope="module")
def mixed(segments):
    """200 clips with the default options (2 s, 16 kHz), their parts kept."""
    birds, others = segments
    opts = MixOptions(duration=DURATION)
    rng = np.random.default_rng(42)
    return opts, [(*mix_clip(f"c{i}", i % 2 == 0, birds, others, SR, rng, opts, keep_components=True),) for i in range(200)]


def test_mix_is_the_scaled_sum_of_its_parts(mixed):
    _, clips = mixed
    for x, rec in clips[:40]:
        assert x.dtype == np.float32 and x.shape == (N,)
        assert len(rec.components) == len(rec.events)
        np.testing.assert_allclose(x, rec.gain * (rec.background + sum(rec.components, np.zeros(N))), atol=1e-6)
        assert np.abs(x).max() <= 0.98 + 1e-6


def test_negative_clips_hold_no_bird_at_all(mixed):
    _, clips = mixed
    negatives = [rec for _, rec in clips if not rec.hasbird]
    assert len(negatives) == 100
    for rec in negatives:
        assert rec.main is None
        assert not any(e.bird or e.category in BIRD_CATEGORIES for e in rec.events)
        assert not any(p.startswith(("bird:", "synthetic-")) for p in rec.parts)


def test_positive_clips_hold_a_main_bird_over_the_floor_mostly_inside(mixed):
    opts, clips = mixed
    positives = [rec for _, rec in clips if rec.hasbird]
    assert len(positives) == 100
    for rec in positives:
        mains = [(e, c) for e, c in zip(rec.events, rec.components) if e.main]
        assert len(mains) == 1
        e, comp = mains[0]
        assert e.bird and e.category in BIRD_CATEGORIES
        a, b = max(0, e.start), min(N, e.stop)
        # at least 70 % of the sound itself (before any reverberation tail) lies inside the clip
        assert 0 < e.body <= e.stop - e.start
        assert (min(N, e.start + e.body) - a) / e.body >= 0.7
        # the SNR recomputed from what was mixed in: the main bird's part in the clip against the background
        snr = 10 * np.log10(active_power(comp[a:b], SR) / np.mean(rec.background**2))
        assert snr == pytest.approx(e.snr_db, abs=1e-3)
        assert snr >= opts.snr_floor_db - 1e-3
        assert not np.any(comp[:a]) and not np.any(comp[b:])


def test_only_positive_clips_have_faint_or_partial_extra_birds(mixed):
    opts, clips = mixed
    extra = [e for _, rec in clips for e in rec.events if e.bird and not e.main]
    assert extra and all(rec.hasbird for _, rec in clips for e in rec.events if e.bird)
    assert any(e.snr_db < opts.snr_floor_db for e in extra)  # faint ones
    assert any(e.start < 0 or e.stop > N or "/cut" in e.tag for e in extra)  # partial ones


def test_augmentations_are_drawn_for_both_classes(mixed):
    _, clips = mixed
    for mark in ("/p", "/w", "/eq", "/rv", "/lp", "/d", "/hp"):
        birds = [e for _, rec in clips for e in rec.events if e.bird and mark in e.tag]
        others = [e for _, rec in clips for e in rec.events if not e.bird and mark in e.tag]
        assert birds and others, mark


def test_recipe_category_is_the_loudest_bird_or_distractor(mixed):
    _, clips = mixed
    seen = set()
    for _, rec in clips:
        pool = [e for e in rec.events if e.bird == bool(rec.hasbird)]
        if pool:
            loudest = max(pool, key=lambda e: e.snr_db)
            assert rec.category == loudest.category and rec.snr_db == loudest.snr_db
        else:
            assert not rec.hasbird and rec.category == (rec.bed_category or "noise") and rec.snr_db is None
        seen.add(rec.category)
    assert {"bird_call", "music", "ui"} <= seen


def test_switching_every_augmentation_off_leaves_events_untouched(segments):
    birds, others = segments
    off = MixOptions(duration=DURATION, p_pitch=0, p_warp=0, p_eq=0, p_bandlimit=0, p_lowpass=0, p_distance=0,
                     p_reverb=0, p_partial=0)
    rng = np.random.default_rng(1)
    for i in range(30):
        _, rec = mix_clip(f"c{i}", i % 2 == 0, birds, others, SR, rng, off)
        assert all("/" not in e.tag for e in rec.events)


def test_hard_negative_draws_follow_the_category_weights(segments):
    birds, others = segments
    only_music = MixOptions(duration=DURATION, p_hard_negative=1.0, category_weights={"music": 1.0, "ui": 0.0, "vehicle": 0.0,
                                                                                      "other": 0.0})
    uniform = MixOptions(duration=DURATION, p_hard_negative=0.0, category_weights={"music": 1.0})
    rng = np.random.default_rng(2)
    cats_hard, cats_uniform = set(), set()
    for i in range(40):
        cats_hard |= {e.category for e in mix_clip(f"h{i}", False, birds, others, SR, rng, only_music)[1].events}
        cats_uniform |= {e.category for e in mix_clip(f"u{i}", False, birds, others, SR, rng, uniform)[1].events}
    assert cats_hard == {"music"}
    assert cats_uniform == {"music", "ui", "vehicle", "other"}  # beds are not events
    assert HARD_CATEGORY_WEIGHTS["music"] > HARD_CATEGORY_WEIGHTS["other"]


def test_synthetic_bird_clips_are_labelled_so(segments):
    birds, others = segments
    opts = MixOptions(duration=DURATION, p_synthetic_bird=1.0)
    rng = np.random.default_rng(3)
    for i in range(10):
        _, rec = mix_clip(f"s{i}", True, birds, others, SR, rng, opts)
        assert rec.category == "synthetic_bird" and rec.main.tag.startswith("synthetic-")
    # no real birds at all: synthetic calls make the positives
    _, rec = mix_clip("s", True, [], others, SR, rng, MixOptions(duration=DURATION))
    assert rec.main.category == "synthetic_bird"


def test_mix_clip_refuses_a_bird_among_the_others(segments):
    birds, others = segments
    with pytest.raises(BootstrapError):
        mix_clip("x", False, birds, [*others, birds[0]], SR, np.random.default_rng(0), MixOptions(duration=DURATION))


def test_mix_options_keep_the_old_fields_and_check_the_new():
    o = MixOptions()
    old = {"duration": 10.0, "positive_rate": 0.5, "snr_db": (-3.0, 20.0), "noise_dbfs": (-50.0, -25.0),
           "p_bed": 0.5, "p_lowpass": 0.35, "p_synthetic_bird": 0.1, "gain_db": (-12.0, 0.0)}
    assert {k: getattr(o, k) for k in old} == old
    assert json.loads(json.dumps(o.__dict__))  # written into build.json
    probs = [f.name for f in fields(MixOptions) if f.name.startswith("p_")]
    assert {"p_pitch", "p_warp", "p_eq", "p_reverb", "p_distance", "p_partial", "p_hard_negative"} <= set(probs)
    with pytest.raises(OptionError):
        MixOptions(p_reverb=1.5)
    with pytest.raises(OptionError):
        MixOptions(snr_floor_db=25.0)
    with pytest.raises(OptionError):
        MixOptions(rt60_s=(1.0, 0.5))
    with pytest.raises(OptionError):
        MixOptions(calls_per_clip=(0, 2))


def test_write_fold_writes_labels_and_a_recipe_with_categories(tmp_path, segments):
    birds, others = segments
    opts = MixOptions(duration=1.0)
    out = write_fold(tmp_path / "fold0", 0, birds + others, 8, SR, 5, opts, prefix="u")
    with open(out / "fold0.csv") as f:
        labels = list(csv.DictReader(f))
    with open(out / "recipe.csv") as f:
        recipe = list(csv.DictReader(f))
    assert [r["itemid"] for r in labels] == [r["itemid"] for r in recipe] == [f"ufold0_{i:04d}" for i in range(8)]
    assert tuple(recipe[0]) == RECIPE_COLUMNS
    assert sum(int(r["hasbird"]) for r in labels) == 4
    for lab, rec in zip(labels, recipe):
        assert lab["hasbird"] == rec["bird"]
        assert (rec["category"] in BIRD_CATEGORIES) == (rec["bird"] == "1")
        assert rec["bird"] == "0" or float(rec["snr_db"]) >= opts.snr_floor_db
        assert (out / "wav" / f"{lab['itemid']}.wav").stat().st_size > 2 * SR
    again = write_fold(tmp_path / "again" / "fold0", 0, birds + others, 8, SR, 5, opts, prefix="u")
    assert (again / "recipe.csv").read_text() == (out / "recipe.csv").read_text()  # seeded


def test_a_long_whole_file_is_a_bed_and_a_short_or_listed_cut_follows_its_duration():
    rng = np.random.default_rng(3)
    long_whole = segment("rain", 0, "weather", rng.standard_normal(int(BED_MIN_S * SR) + 1))
    short_whole = segment("beep", 0, "ui", rng.standard_normal(int(BED_MIN_S * SR) - 1))
    listed_short = segment("song", 0, "music", rng.standard_normal(int(2 * BED_MIN_S * SR)), dur=BED_MIN_S - 1)
    assert long_whole.is_bed and not short_whole.is_bed
    assert not listed_short.is_bed  # a listed segment's own duration decides, not the file's length


def test_a_reverberant_main_bird_is_placed_by_its_sound_not_its_tail(segments):
    # long tails on every event: placing by the reverberated length would let the call itself leave the clip
    birds, others = segments
    opts = MixOptions(duration=DURATION, p_reverb=1.0, rt60_s=(1.4, 1.5), drr_db=(-3.0, -2.0))
    rng = np.random.default_rng(7)
    tails = 0
    for i in range(60):
        _, rec = mix_clip(f"r{i}", True, birds, others, SR, rng, opts)
        e = rec.main
        tails += e.body < e.stop - e.start
        assert (min(N, e.start + e.body) - max(0, e.start)) / e.body >= 0.7, e
    assert tails > 30  # the tails were there to be mistaken for the call
