"""A small, real Detector for the batch tests: logistic regression on each channel's mean and maximum.

It follows the whole Detector contract (fit / predict_proba / save / load through the base class), so the
batch driver, its worker processes and a Dask cluster load it exactly as they would load a trained network:
by its module name and its registered kind.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np
import soundfile as sf
import torch
from sklearn.linear_model import LogisticRegression

from scatterbird.data.synthetic import make_clip
from scatterbird.models.base import Detector, check_labels, check_sequences
from scatterbird.pipeline.config import FeatureConfig
from scatterbird.pipeline.frontend.scattering import Scattering


def _summary(sequences: Sequence[np.ndarray]) -> np.ndarray:
    """(n, 2 * channels): per-channel mean and maximum over frames."""
    return np.stack([np.concatenate([s.mean(axis=0), s.max(axis=0)]) for s in sequences]).astype(np.float64)


class SimpleDetector(Detector):
    """Logistic regression on per-channel mean and max of a sequence.

    Parameters
    ----------
    C : float
        Inverse L2 regularisation strength.
    """

    kind = "test-simple-logistic"

    def __init__(self, C: float = 1.0) -> None:
        self.C = C

    def fit(self, sequences, labels, unlabeled=None) -> "SimpleDetector":
        seqs = check_sequences(sequences)
        y = check_labels(labels, len(seqs))
        X = _summary(seqs)
        self.mean_ = X.mean(axis=0)
        self.scale_ = X.std(axis=0) + 1e-6
        lr = LogisticRegression(C=self.C, max_iter=1000).fit((X - self.mean_) / self.scale_, y)
        self.coef_ = lr.coef_[0].astype(np.float64)
        self.intercept_ = float(lr.intercept_[0])
        return self

    @property
    def n_channels_(self) -> int:
        return self.mean_.size // 2

    def predict_proba(self, sequences) -> np.ndarray:
        seqs = check_sequences(sequences, self.n_channels_)
        z = ((_summary(seqs) - self.mean_) / self.scale_) @ self.coef_ + self.intercept_
        return 1.0 / (1.0 + np.exp(-z))

    def _get_state(self):
        tensors = {
            "mean": torch.from_numpy(self.mean_),
            "scale": torch.from_numpy(self.scale_),
            "coef": torch.from_numpy(self.coef_),
        }
        return tensors, {"intercept": self.intercept_}

    def _set_state(self, tensors: Mapping[str, torch.Tensor], extra: Mapping[str, Any]) -> None:
        self.mean_ = tensors["mean"].numpy().astype(np.float64)
        self.scale_ = tensors["scale"].numpy().astype(np.float64)
        self.coef_ = tensors["coef"].numpy().astype(np.float64)
        self.intercept_ = float(extra["intercept"])


# -- helpers for the batch tests ------------------------------------------------------------------
#: A fast feature configuration for tests: 8 kHz, 8 ms frames, first order only.
# thresholding off: the fast test detector exercises the batch machinery (test_thresholding.py covers it)
FAST_CONFIG = FeatureConfig(J=6, Q1=4, max_order=1, sample_rate=8000, threshold="none")


def train_simple_detector(path, *, config=None, n_clips: int = 40, clip_s: float = 2.0, seed: int = 0,
                          C: float = 1.0) -> SimpleDetector:
    """Fit a SimpleDetector on synthetic clips (half with one bird call, 10-15 dB SNR) and save it to ``path``."""
    config = config or FAST_CONFIG
    sc = Scattering(config)
    rng = np.random.default_rng(seed)
    seqs, labels = [], []
    for i in range(n_clips):
        bird = i % 2 == 1
        x, _, _ = make_clip(clip_s, config.sample_rate, hasbird=bird, snr_db=float(rng.uniform(10, 15)),
                            background_kind=str(rng.choice(["white", "pink", "brown"])), n_events=1, rng=rng)
        seqs.append(sc.whole(x).S.T)
        labels.append(int(bird))
    det = SimpleDetector(C=C).fit(seqs, labels)
    det.feature_config = config
    det.save(path)
    return det


def write_recordings(folder, specs, *, sr: int = 8000, seed: int = 1) -> dict:
    """Write synthetic recordings with known events.

    Parameters
    ----------
    folder : Path
    specs : sequence of (relative path, duration_s, has_bird)
        The extension chooses the format (.wav: 16-bit PCM, .flac).

    Returns
    -------
    dict
        Absolute path (str) -> list of :class:`data.synthetic.Event`.
    """
    rng = np.random.default_rng(seed)
    truth = {}
    for rel, duration, bird in specs:
        p = folder / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        x, events, _ = make_clip(duration, sr, hasbird=bird, snr_db=12.0, background_kind="pink",
                                 n_events=1, rng=rng)
        sf.write(p, x, sr, subtype="PCM_16" if p.suffix == ".wav" else None)
        truth[os.path.abspath(p)] = events
    return truth
