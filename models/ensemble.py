"""A detector that scores with the mean of several detectors of one kind (an ensemble).

The members are ordinary detectors (by default inversion detectors that differ only in their seed); the
ensemble's probability of bird is the mean of theirs. A calibration temperature belongs to the ensemble and
applies once, to the mean; the members keep none. The file format is the base one: each member's tensors under
``m{i}.``, and its hyperparameters and extra state in the ensemble's extra state, so a saved ensemble loads
with ``torch.load(weights_only=True)`` like any model and its hash changes with any member's weights.

Member classes are found by kind in the base class's registry (:attr:`Detector._registry`), which
:mod:`scatterbird.models.registry` fills by importing every detector module; this module imports no other
detector, so the registry can import it without a cycle. See docs/ensemble.md.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from scatterbird.errors import DetectorError
from scatterbird.models.base import Detector, _bird_probability, _to_json, check_sequences
from scatterbird.pipeline.config import FeatureConfig


def member_class(kind: str) -> type[Detector]:
    """The registered detector class of ``kind``; a DetectorError naming the known kinds otherwise.

    An ensemble cannot be a member (the mean of means is a plain ensemble with more members).
    """
    if kind == EnsembleDetector.kind:
        raise DetectorError("an ensemble's members cannot be ensembles; give the member kind directly")
    cls = Detector._registry.get(kind)
    if cls is None:
        known = sorted(k for k in Detector._registry if k != EnsembleDetector.kind)
        raise DetectorError(f"unknown member kind {kind!r}; available: {', '.join(known) or '(none)'}")
    return cls


def _build_member(kind: str, params: Mapping[str, Any], seed: int | None) -> Detector:
    """A new member: ``kind`` with ``params``, and ``random_state=seed`` where it takes one."""
    cls = member_class(kind)
    accepted = inspect.signature(cls.__init__).parameters
    params = dict(params)
    if seed is not None and "random_state" in accepted:
        params["random_state"] = int(seed)
    try:
        return cls(**params)
    except (TypeError, ValueError) as exc:
        raise DetectorError(f"ensemble member of kind {kind!r}: {exc}") from None


def _plain_params(det: Detector) -> dict[str, Any]:
    """A detector's own hyperparameters as JSON gives them back (tuples as lists)."""
    return json.loads(_to_json(det.get_params(deep=False)))


class EnsembleDetector(Detector):
    """The mean probability of bird of ``n_members`` detectors of one kind.

    Parameters
    ----------
    member_kind : str
        The members' registered kind (not "ensemble").
    n_members : int
        How many members ``fit`` trains (>= 1).
    member_params : dict, optional
        The members' hyperparameters (without ``random_state``, which the ensemble sets).
    random_state : int
        Member ``i`` is built with ``random_state + i``, so the members differ where their training is seeded.

    Attributes
    ----------
    members_ : list of Detector
        The fitted members.
    device : str
        Where members that have a ``device`` (inversion detectors) compute; setting it sets theirs. Not a
        hyperparameter: neither saved nor hashed.
    """

    kind = "ensemble"

    def __init__(
        self,
        member_kind: str = "inversion",
        n_members: int = 2,
        member_params: dict[str, Any] | None = None,
        random_state: int = 0,
    ) -> None:
        self.member_kind = member_kind
        self.n_members = n_members
        self.member_params = member_params
        self.random_state = random_state

    # -- the members' shared settings ---------------------------------------------------------------
    @property
    def feature_config(self) -> FeatureConfig | None:  # type: ignore[override]
        """The feature configuration, shared with every member (setting it sets theirs)."""
        return self.__dict__.get("_feature_config")

    @feature_config.setter
    def feature_config(self, value: FeatureConfig | None) -> None:
        self._feature_config = value
        for m in self.__dict__.get("members_", []):
            m.feature_config = value

    @property
    def device(self) -> str:
        """Where members with a ``device`` compute (see the class notes)."""
        return self.__dict__.get("_device", "cpu")

    @device.setter
    def device(self, value: str) -> None:
        self._device = str(value)
        for m in self.__dict__.get("members_", []):
            self._share_device(m)

    def _share_device(self, member: Detector) -> None:
        if hasattr(member, "device"):
            member.device = self.device

    def _adopt(self, members: list[Detector]) -> None:
        """Make ``members`` the fitted members, with the ensemble's feature configuration and device."""
        for m in members:
            m.feature_config = self.feature_config
            self._share_device(m)
        self.members_ = members

    def _check_fitted(self) -> None:
        if not self.__dict__.get("members_"):
            raise DetectorError("this EnsembleDetector is not fitted yet; call fit (or build it with from_members)")

    # -- construction from trained detectors --------------------------------------------------------
    @classmethod
    def from_members(cls, detectors: Sequence[Detector]) -> EnsembleDetector:
        """An ensemble of already fitted detectors (kept, not copied).

        ``member_params`` is set to the members' shared hyperparameters (without ``random_state``) when
        they all have the same ones, else None; ``random_state`` to the first member's.

        Parameters
        ----------
        detectors : sequence of Detector
            Fitted, of one kind (not an ensemble), on one feature configuration and channel count, without a
            calibration temperature (calibrate the ensemble instead: its temperature applies to the mean).

        Raises
        ------
        DetectorError
            On no detector, mixed kinds, configurations or channel counts, an unfitted member or one with a
            temperature.
        """
        members = list(detectors)
        if not members:
            raise DetectorError("an ensemble needs at least one member detector")
        kinds = sorted({m.kind for m in members})
        if len(kinds) > 1:
            raise DetectorError(f"ensemble members must be of one kind; got {', '.join(kinds)}")
        member_class(kinds[0])  # refuses an ensemble of ensembles
        configs = {m.feature_config.hash if m.feature_config is not None else None for m in members}
        if len(configs) > 1:
            raise DetectorError(
                "ensemble members must share one feature configuration; their config hashes: "
                + ", ".join(sorted(str(c) for c in configs))
            )
        channels = []
        for i, m in enumerate(members):
            try:
                channels.append(int(m.n_channels_))
            except (AttributeError, NotImplementedError):
                raise DetectorError(f"ensemble member {i} ({m.kind}) is not fitted") from None
            if m.temperature != 1.0:
                raise DetectorError(
                    f"ensemble member {i} has a calibration temperature ({m.temperature:g}); an ensemble is "
                    "calibrated as a whole (its temperature applies to the mean): set the member's temperature "
                    "to 1 and calibrate the ensemble"
                )
        if len(set(channels)) > 1:
            raise DetectorError(f"ensemble members must take one channel count; got {sorted(set(channels))}")
        params = [_plain_params(m) for m in members]
        seed = params[0].get("random_state", 0)
        shared = [{k: v for k, v in p.items() if k != "random_state"} for p in params]
        ens = cls(kinds[0], len(members), shared[0] if all(s == shared[0] for s in shared) else None, seed)
        ens._feature_config = members[0].feature_config
        ens.members_ = members
        return ens

    # -- the Detector contract ----------------------------------------------------------------------
    def fit(
        self,
        sequences: Sequence[np.ndarray],
        labels: Sequence[int],
        unlabeled: Sequence[np.ndarray] | None = None,
    ) -> EnsembleDetector:
        """Fit ``n_members`` new members, member ``i`` seeded with ``random_state + i``.

        ``unlabeled`` is passed to members whose ``fit`` takes it.
        """
        if int(self.n_members) < 1:
            raise DetectorError(f"n_members must be >= 1, got {self.n_members}")
        params = dict(self.member_params or {})
        if "random_state" in params:
            raise DetectorError(
                "member_params must not set random_state: the ensemble seeds member i with its random_state + i"
            )
        members = [
            _build_member(self.member_kind, params, int(self.random_state) + i) for i in range(int(self.n_members))
        ]
        self._adopt(members)  # the device before fitting: members train where the ensemble is told to
        for m in members:
            if unlabeled is not None and "unlabeled" in inspect.signature(m.fit).parameters:
                m.fit(sequences, labels, unlabeled=unlabeled)
            else:
                m.fit(sequences, labels)
        return self

    def predict_proba(self, sequences: Sequence[np.ndarray]) -> np.ndarray:
        """Probability of bird, shape (n,): the mean of the members' (then the ensemble's temperature)."""
        self._check_fitted()
        seqs = check_sequences(sequences, self.n_channels_)
        total = np.zeros(len(seqs), dtype=np.float64)
        for m in self.members_:
            total += _bird_probability(m.predict_proba(seqs))
        return total / len(self.members_)

    @property
    def n_channels_(self) -> int:
        self._check_fitted()
        return int(self.members_[0].n_channels_)

    def _get_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        self._check_fitted()
        tensors: dict[str, torch.Tensor] = {}
        members = []
        for i, m in enumerate(self.members_):
            t, extra = m._get_state()
            tensors.update((f"m{i}.{k}", v) for k, v in t.items())
            members.append({"params": _plain_params(m), "state": extra})
        return tensors, {"member_kind": self.members_[0].kind, "members": members}

    def _set_state(self, tensors: Mapping[str, torch.Tensor], extra: Mapping[str, Any]) -> None:
        kind = str(extra["member_kind"])
        members = []
        for i, rec in enumerate(extra["members"]):
            m = _build_member(kind, rec["params"], None)
            prefix = f"m{i}."
            m._set_state({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}, rec["state"])
            members.append(m)
        if not members:
            raise DetectorError("the ensemble's saved state holds no member")
        self._adopt(members)
