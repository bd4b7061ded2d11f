"""The Detector contract every scatterbird detector follows, and its safe file format.

A detector takes *sequences*: float32 arrays of shape (n_frames, n_channels) of scattering features (one per
clip or window; lengths may differ), and returns one probability of bird per sequence.

scikit-learn's conventions hold: ``__init__`` only stores hyperparameters, ``fit`` returns ``self``, learned
state ends in ``_``, ``random_state`` seeds everything random. The base class implements the parameter side of
those conventions itself (``get_params``, ``set_params``, ``repr``) rather than deriving from scikit-learn's
``BaseEstimator``: importing ``sklearn.base`` loads scipy.stats and much of scikit-learn into every process that
loads a detector, `detect`'s workers included. ``sklearn.base.clone`` and ``check_is_fitted`` still work on a
detector.

Files are written with ``torch.save`` and read with ``torch.load(..., weights_only=True)``: only tensors,
numbers, strings, lists and dicts can come back, never arbitrary objects, so a model file handed over by
someone else cannot run code when it is opened.

A detector may carry a calibration temperature ``T`` (:meth:`Detector.calibrate`): every subclass's
``predict_proba`` is wrapped here so that it returns ``sigmoid(logit(p) / T)``, and the temperature travels
in the file's extra state. At ``T == 1`` (the default) scores, files and model hashes are exactly those of a
detector without one.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from scatterbird.errors import DetectorError, OutputError
from scatterbird.pipeline.config import FeatureConfig

#: Hyperparameters that change how a detector reports, not what it computes.
_NOT_HASHED = frozenset({"verbose", "progress", "n_jobs"})

#: Written into every model file; bumped when the layout changes.
MODEL_FORMAT = "scatterbird-detector/1"

#: The calibration temperature's key in a model file's extra state; absent at T == 1, so a detector never
#: calibrated keeps the file and the hash it had before temperatures existed.
TEMPERATURE_KEY = "calibration_temperature"

#: Bounds of a fitted temperature: beyond them the scores are all but 0/1 or all but 1/2.
TEMPERATURE_BOUNDS = (1e-2, 1e2)

#: Probabilities are kept this far from 0 and 1 when a temperature is fitted: one confident mistake at
#: exactly 0 or 1 would otherwise make the likelihood zero for every temperature.
_FIT_EPS = 1e-7


def _to_json(value: Any) -> str:
    """Hyperparameters as sorted JSON (tuples as lists, NumPy scalars and arrays as Python values)."""
    return json.dumps(value, sort_keys=True, default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"hyperparameter value {value!r} of type {type(value).__name__} cannot be written as JSON")


def check_sequences(
    sequences: Sequence[np.ndarray],
    n_channels: int | None = None,
    name: str = "sequences",
    dtype: type = np.float32,
) -> list[np.ndarray]:
    """Validate and convert a list of (n_frames, n_channels) arrays (to float32 unless ``dtype`` says).

    Parameters
    ----------
    sequences : sequence of array-like
        One array per clip, shape (n_frames, n_channels); n_frames may differ.
    n_channels : int, optional
        Required channel count (the fitted one).
    name : str
        Used in error messages.
    dtype : numpy dtype
        Element type of the returned arrays (the RNTK keeps float64).

    Returns
    -------
    list of ndarray

    Raises
    ------
    DetectorError
        On an empty list, a non-2-D or empty sequence, mismatched channel counts, or NaN/inf values.
    """
    if sequences is None or len(sequences) == 0:
        raise DetectorError(f"{name}: no sequences given")
    out = []
    for i, s in enumerate(sequences):
        a = np.asarray(s, dtype=dtype)
        if a.ndim != 2:
            raise DetectorError(f"{name}[{i}]: expected shape (n_frames, n_channels), got {a.shape}")
        if a.shape[0] == 0 or a.shape[1] == 0:
            raise DetectorError(f"{name}[{i}]: empty sequence, shape {a.shape}")
        if not np.isfinite(a).all():
            raise DetectorError(f"{name}[{i}]: contains NaN or infinite values")
        out.append(a)
    chans = {a.shape[1] for a in out}
    if len(chans) > 1:
        raise DetectorError(f"{name}: sequences have different channel counts {sorted(chans)}")
    if n_channels is not None and out[0].shape[1] != n_channels:
        raise DetectorError(
            f"{name}: sequences have {out[0].shape[1]} channels but {n_channels} are expected "
            "(the channel count the detector was fitted on)"
        )
    return out


def check_labels(labels: Sequence[int], n: int) -> np.ndarray:
    """Labels as an int array of 0/1 with both classes present."""
    y = np.asarray(labels)
    if y.shape != (n,):
        raise DetectorError(f"labels: expected {n} labels, got shape {y.shape}")
    if not np.isin(y, (0, 1)).all():
        raise DetectorError(f"labels must be 0 or 1, got values {sorted(set(y.tolist()))[:5]}")
    if len(np.unique(y)) < 2:
        raise DetectorError(f"labels hold a single class ({int(y[0])}); both bird and no-bird clips are needed")
    return y.astype(np.int64)


# -- temperature scaling -------------------------------------------------------------------------------
def _logit(p: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):  # p of exactly 0 or 1: -inf or +inf, which the sigmoid maps back
        return np.log(p) - np.log1p(-p)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(z))  # never overflows; exp(-inf) = 0 gives exactly 0 or 1 at infinite z
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _check_temperature(t: Any) -> float:
    try:
        value = float(t)
    except (TypeError, ValueError):
        raise DetectorError(f"calibration temperature must be a number, got {t!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise DetectorError(f"calibration temperature must be finite and > 0, got {value}")
    return value


def apply_temperature(probs: Sequence[float] | np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities rescaled by a temperature: ``sigmoid(logit(p) / T)``.

    ``T > 1`` pulls scores towards 1/2 (a less confident model), ``T < 1`` pushes them out; the order of the
    scores, hence any ROC AUC, is unchanged, and 0, 1/2 and 1 stay where they are.

    Parameters
    ----------
    probs : array-like of float in [0, 1]
    temperature : float
        ``T > 0``.

    Returns
    -------
    ndarray of float64, the shape of ``probs``
    """
    t = _check_temperature(temperature)
    p = np.asarray(probs, dtype=np.float64)
    if t == 1.0:
        return p.copy()
    return _sigmoid(_logit(p) / t)


def fit_temperature(labels: Sequence[int], probs: Sequence[float] | np.ndarray) -> float:
    """The temperature ``T > 0`` that minimises the negative log-likelihood of ``sigmoid(logit(p) / T)``.

    Probabilities are clipped to ``[1e-7, 1 - 1e-7]`` first. The likelihood is convex in ``1 / T``, so a
    bounded scalar search on ``log T`` (``scipy.optimize.minimize_scalar``) finds its minimum; the result
    lies within :data:`TEMPERATURE_BOUNDS` (the lower bound when the scores separate the classes perfectly).

    Parameters
    ----------
    labels : sequence of int, 0/1, shape (n,)
        Held-out labels (fitting on the training clips would undo nothing of the overfitting).
    probs : array-like of float in [0, 1], shape (n,)
        The uncalibrated probabilities of bird.

    Returns
    -------
    float
        1.0 when every score is 1/2 (no temperature changes anything).

    Raises
    ------
    DetectorError
        On labels that are not 0/1 of both classes, or probabilities outside [0, 1], NaN or of another length.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 1 or not np.isfinite(p).all() or ((p < 0) | (p > 1)).any():
        raise DetectorError("probabilities must be a 1-D array of finite values in [0, 1]")
    y = check_labels(labels, p.size).astype(np.float64)
    z = _logit(np.clip(p, _FIT_EPS, 1.0 - _FIT_EPS))
    if not np.any(z):
        return 1.0
    from scipy.optimize import minimize_scalar  # scipy only where a temperature is fitted

    def nll(log_t: float) -> float:
        a = z * math.exp(-log_t)
        return float(np.mean(np.logaddexp(0.0, a) - y * a))  # -log likelihood of Bernoulli(sigmoid(a))

    lo, hi = (math.log(b) for b in TEMPERATURE_BOUNDS)
    res = minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-6})
    return float(min(max(math.exp(res.x), TEMPERATURE_BOUNDS[0]), TEMPERATURE_BOUNDS[1]))


def _temper_output(p: Any, temperature: float) -> np.ndarray:
    """A ``predict_proba`` result rescaled: shape (n,), or (n, 2) with the bird column second."""
    a = np.asarray(p)
    dtype = a.dtype if np.issubdtype(a.dtype, np.floating) else np.float64
    if a.ndim == 1:
        return apply_temperature(a, temperature).astype(dtype, copy=False)
    if a.ndim == 2 and a.shape[1] == 2:
        bird = apply_temperature(a[:, 1], temperature)
        return np.stack([1.0 - bird, bird], axis=1).astype(dtype, copy=False)
    raise DetectorError(f"predict_proba returned shape {a.shape}; a temperature needs (n,) or (n, 2)")


def _bird_probability(p: Any) -> np.ndarray:
    """The probability of bird from a ``predict_proba`` result of shape (n,) or (n, 2)."""
    a = np.asarray(p, dtype=np.float64)
    return a[:, 1] if a.ndim == 2 and a.shape[1] == 2 else a


# The wrappers below act only where they are the method the instance's class resolves to: a subclass of a
# subclass that calls ``super().predict_proba`` gets the temperature applied once, not twice.
def _tempered_predict_proba(predict_proba: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(predict_proba)
    def wrapper(self: Detector, *args: Any, **kwargs: Any) -> Any:
        p = predict_proba(self, *args, **kwargs)
        if self._temperature == 1.0 or type(self).predict_proba is not wrapper:
            return p
        return _temper_output(p, self._temperature)

    return wrapper


def _state_with_temperature(get_state: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(get_state)
    def wrapper(self: Detector) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors, extra = get_state(self)
        if type(self)._get_state is not wrapper:  # the outermost class adds it, once
            return tensors, extra
        if self._temperature != 1.0:  # at 1 the extra state, and so the file and the hash, stay as they were
            extra = {**extra, TEMPERATURE_KEY: float(self._temperature)}
        return tensors, extra

    return wrapper


def _state_setting_temperature(set_state: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(set_state)
    def wrapper(self: Detector, tensors: Mapping[str, torch.Tensor], extra: Mapping[str, Any]) -> None:
        if type(self)._set_state is not wrapper:
            set_state(self, tensors, extra)
            return
        rest = dict(extra)
        t = _check_temperature(rest.pop(TEMPERATURE_KEY, 1.0))  # a file saved without one: 1, scores unchanged
        set_state(self, tensors, rest)
        self._temperature = t

    return wrapper


def _training_drops_temperature(train: Callable[..., Any]) -> Callable[..., Any]:
    """``fit`` and ``fine_tune`` change the scores: a temperature fitted to the old ones no longer holds."""

    @functools.wraps(train)
    def wrapper(self: Detector, *args: Any, **kwargs: Any) -> Any:
        self._temperature = 1.0
        return train(self, *args, **kwargs)

    return wrapper


_WRAPPED = {
    "fit": _training_drops_temperature,
    "fine_tune": _training_drops_temperature,
    "predict_proba": _tempered_predict_proba,
    "_get_state": _state_with_temperature,
    "_set_state": _state_setting_temperature,
}


def _same_value(a: Any, b: Any) -> bool:
    """Whether a hyperparameter still has its default (arrays and sequences compared element by element)."""
    if a is b:
        return True
    try:
        return bool(np.array_equal(a, b))
    except (TypeError, ValueError):  # ragged sequences, objects NumPy cannot compare
        return False


class Detector:
    """Base of every detector. Subclasses implement ``fit``, ``predict_proba``, ``_get_state`` and
    ``_set_state``; saving and loading are shared.

    Hyperparameters are the arguments of the subclass's ``__init__``, stored under their own names:
    ``get_params``, ``set_params``, ``repr`` and ``sklearn.base.clone`` are built on that.

    Attributes
    ----------
    kind : str
        Registry name written into the file ("inversion", "rntk", ...).
    feature_config : FeatureConfig or None
        The configuration of the features the detector is fitted on. Set it before ``save``.
    temperature : float
        The calibration temperature applied to ``predict_proba`` (1: none); see :meth:`calibrate`.
    """

    kind: ClassVar[str] = "base"
    _registry: ClassVar[dict[str, type[Detector]]] = {}

    feature_config: FeatureConfig | None = None
    # a class default, not set in __init__ (which only stores hyperparameters) nor ending in "_" (which
    # scikit-learn's check_is_fitted would take for learned state)
    _temperature: float = 1.0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.kind != "base":
            Detector._registry[cls.kind] = cls
        # every detector's scores and saved state get the temperature, without each subclass handling it
        for name, wrap in _WRAPPED.items():
            if name in cls.__dict__:
                setattr(cls, name, wrap(cls.__dict__[name]))

    # -- hyperparameters (scikit-learn's estimator conventions) --------------------------------------
    @classmethod
    def _get_param_names(cls) -> list[str]:
        """The hyperparameter names: the named arguments of ``__init__``, sorted (as scikit-learn lists them).

        Raises
        ------
        DetectorError
            When ``__init__`` takes ``*args``: a hyperparameter without a name cannot be read back or cloned.
        """
        if cls.__init__ is object.__init__:
            return []
        names = []
        for p in inspect.signature(cls.__init__).parameters.values():
            if p.name == "self" or p.kind is p.VAR_KEYWORD:
                continue
            if p.kind is p.VAR_POSITIONAL:
                raise DetectorError(
                    f"{cls.__name__}.__init__ takes *{p.name}: a detector's hyperparameters must be named arguments"
                )
            names.append(p.name)
        return sorted(names)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Hyperparameters by name, as ``__init__`` took them.

        Parameters
        ----------
        deep : bool
            Also list the hyperparameters of any hyperparameter that has ``get_params`` itself (an estimator
            given as a hyperparameter), as ``name__subname``; scikit-learn's meaning.
        """
        out: dict[str, Any] = {}
        for name in self._get_param_names():
            value = getattr(self, name)
            if deep and hasattr(value, "get_params") and not isinstance(value, type):
                out.update((f"{name}__{k}", v) for k, v in value.get_params().items())
            out[name] = value
        return out

    def set_params(self, **params: Any) -> Detector:
        """Set hyperparameters (``name__subname`` reaches into a hyperparameter that has ``set_params``).

        Every name is checked before anything is set, so a call that fails changes nothing.

        Returns
        -------
        Detector
            ``self``.

        Raises
        ------
        DetectorError
            On a name that is not a hyperparameter (the message lists them), or ``name__subname`` where
            ``name`` has no ``set_params``.
        """
        names = self._get_param_names()
        nested: dict[str, dict[str, Any]] = {}
        direct: dict[str, Any] = {}
        for key, value in params.items():
            name, sep, sub = key.partition("__")
            if name not in names:
                raise DetectorError(
                    f"{type(self).__name__} has no hyperparameter {name!r}; "
                    f"its hyperparameters: {', '.join(names) or '(none)'}"
                )
            if sep:
                nested.setdefault(name, {})[sub] = value
            else:
                direct[name] = value
        for name in nested:
            if not hasattr(direct.get(name, getattr(self, name)), "set_params"):
                raise DetectorError(
                    f"{type(self).__name__}: hyperparameter {name!r} has no hyperparameters of its own to set"
                )
        for name, value in direct.items():
            setattr(self, name, value)
        for name, sub_params in nested.items():
            getattr(self, name).set_params(**sub_params)
        return self

    def __repr__(self) -> str:
        """``Kind(name=value, ...)`` with the hyperparameters that differ from their defaults."""
        defaults = {n: p.default for n, p in inspect.signature(type(self).__init__).parameters.items()}
        changed = [
            f"{name}={value!r}"
            for name, value in self.get_params(deep=False).items()
            if not _same_value(value, defaults.get(name, inspect.Parameter.empty))
        ]
        return f"{type(self).__name__}({', '.join(changed)})"

    def __sklearn_tags__(self) -> Any:
        """scikit-learn's tags (those of its ``BaseEstimator``), read by ``check_is_fitted`` and its checks.

        Only scikit-learn (1.6 and later) calls this, so importing it here loads nothing new.
        """
        from sklearn.utils import Tags, TargetTags

        return Tags(estimator_type=None, target_tags=TargetTags(required=False))

    # -- to implement -----------------------------------------------------------------------------
    def fit(
        self,
        sequences: Sequence[np.ndarray],
        labels: Sequence[int],
        unlabeled: Sequence[np.ndarray] | None = None,
    ) -> Detector:
        """Fit on labelled sequences (and, where the detector can use them, unlabeled ones)."""
        raise NotImplementedError

    def predict_proba(self, sequences: Sequence[np.ndarray]) -> np.ndarray:
        """Probability of bird, shape (n_sequences,), values in [0, 1]."""
        raise NotImplementedError

    def _get_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Learned state: (tensors, JSON-able extra values)."""
        raise NotImplementedError

    def _set_state(self, tensors: Mapping[str, torch.Tensor], extra: Mapping[str, Any]) -> None:
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------------
    @property
    def n_channels_(self) -> int:
        raise NotImplementedError

    @property
    def temperature(self) -> float:
        """The calibration temperature ``T``: ``predict_proba`` returns ``sigmoid(logit(p) / T)`` (1: unchanged)."""
        return self._temperature

    @temperature.setter
    def temperature(self, value: float) -> None:
        self._temperature = _check_temperature(value)

    def calibrate(self, sequences: Sequence[np.ndarray], labels: Sequence[int]) -> float:
        """Fit the calibration temperature on held-out labelled sequences and keep it (saved with the model).

        The temperature is fitted to the uncalibrated scores (:func:`fit_temperature`), so calibrating
        twice on the same clips gives the same temperature. Use clips the detector was not trained on.

        Parameters
        ----------
        sequences : sequence of ndarray, shape (n_frames, n_channels)
        labels : sequence of int, 0/1
            Both classes must be present.

        Returns
        -------
        float
            The temperature now set.
        """
        raw = getattr(type(self).predict_proba, "__wrapped__", type(self).predict_proba)
        p = _bird_probability(raw(self, sequences))
        self.temperature = fit_temperature(labels, p)
        return self._temperature

    def save(self, path: str | os.PathLike) -> None:
        """Write weights, hyperparameters and feature configuration to one file (safe format).

        Raises
        ------
        OutputError
            When the file cannot be written (read-only, disk full, no such folder); nothing is left behind.
        """
        tensors, extra = self._get_state()
        payload = {
            "format": MODEL_FORMAT,
            "kind": self.kind,
            "params_json": _to_json(self.get_params()),
            "extra_json": json.dumps(extra, sort_keys=True),
            "feature_config_json": self.feature_config.to_json() if self.feature_config else "",
            "feature_config_hash": self.feature_config.hash if self.feature_config else "",
            "tensors": {k: v.detach().cpu().contiguous() for k, v in tensors.items()},
        }
        tmp = f"{os.fspath(path)}.tmp"
        try:
            # through a Python file: a full disk is then an OSError, not torch's opaque RuntimeError
            with open(tmp, "wb") as f:
                torch.save(payload, f)
            os.replace(tmp, path)  # never leave a half-written model behind
        except BaseException as exc:  # a full disk, a read-only folder, Ctrl-C: no partial file stays
            try:
                os.unlink(tmp)
            except OSError:
                pass
            if isinstance(exc, OSError):
                raise OutputError.from_os_error(exc, path) from None
            raise

    @property
    def model_hash(self) -> str:
        """A hash of the learned state and hyperparameters (identifies the model in result stores)."""
        tensors, extra = self._get_state()
        # Display-only options must not make two identical models look different.
        params = {k: v for k, v in self.get_params().items() if k not in _NOT_HASHED}
        h = hashlib.sha256()
        h.update(self.kind.encode())
        h.update(_to_json(params).encode())
        h.update(json.dumps(extra, sort_keys=True).encode())
        for k in sorted(tensors):
            h.update(k.encode())
            h.update(tensors[k].detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]
