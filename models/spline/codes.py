"""Stage 2: VQ partition codes per layer, their statistics, and the Hamming VQ distance.

The code of an input at layer ``l`` is the index of the active piece of every unit (ReLU: ``1[h > 0]``;
max-pool: the argmax within the window). The *region* of the input after layer ``l`` is the tuple of codes of
layers ``1..l``. Codes are kept as small-integer numpy arrays, one ``(n_inputs, n_units)`` array per layer.

The VQ distance between two inputs at one layer is the normalised Hamming distance, the fraction of units
whose active piece differs (for max-pool layers: of windows whose argmax differs), as in the authors' code.

Derivation: docs/spline-analyses.md §2(a)6 and §4(b)A.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .network import SplineNet, iter_batches


@torch.no_grad()
def input_codes(view: SplineNet, xs: torch.Tensor, *, batch: int = 32) -> list[np.ndarray]:
    """Per-layer codes of a set of inputs.

    Parameters
    ----------
    view : SplineNet
    xs : Tensor, shape (n, *input_shape)
    batch : int
        Inputs per forward pass.

    Returns
    -------
    list of ndarray, one per piecewise layer, shape (n, units), int16 (int32 for pieces counts >= 32768)
    """
    per_layer: list[list[np.ndarray]] = []
    for sl in iter_batches(xs.shape[0], batch):
        t = view.trace(xs[sl])
        for l, p in enumerate(t.pieces):
            dtype = np.int16 if p.shape[-1] < 32768 else np.int32
            if len(per_layer) <= l:
                per_layer.append([])
            per_layer[l].append(p.argmax(-1).cpu().numpy().astype(dtype))
    return [np.concatenate(c, axis=0) for c in per_layer]


def hamming(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """Normalised Hamming distance between the codes of two sets at one layer.

    Parameters
    ----------
    a : ndarray, shape (n_a, units)
    b : ndarray, shape (n_b, units), optional
        Defaults to ``a`` (all pairs within one set).

    Returns
    -------
    ndarray, float64, shape (n_a, n_b)
        Fraction of units whose active piece differs; 0 on the diagonal of ``hamming(a)``.
    """
    b = a if b is None else b
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"codes of {a.shape[1]} and {b.shape[1]} units cannot be compared (inputs of different sizes?)")
    out = np.empty((a.shape[0], b.shape[0]), dtype=np.float64)
    chunk = max(1, int(2e7 // max(1, b.shape[0] * b.shape[1])))  # bounded temporary memory
    for i in range(0, a.shape[0], chunk):
        out[i : i + chunk] = (a[i : i + chunk, None, :] != b[None, :, :]).mean(-1)
    return out


def nearest_neighbours(
    query: np.ndarray, bank: np.ndarray | None = None, k: int = 5, *, exclude_self: bool | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Retrieval by Hamming VQ distance at one layer.

    Parameters
    ----------
    query : ndarray, (n_q, units)
    bank : ndarray, (n_b, units), optional
        Defaults to ``query``; each query then never retrieves itself.
    k : int
    exclude_self : bool, optional
        Leave each query's own index out (default: when ``bank`` is ``query``).

    Returns
    -------
    index : ndarray, int, (n_q, k)
        Bank indices, nearest first (ties broken by index).
    distance : ndarray, float, (n_q, k)
    """
    same = bank is None or bank is query
    bank = query if bank is None else bank
    d = hamming(query, bank)
    if exclude_self if exclude_self is not None else same:
        np.fill_diagonal(d, np.inf)
    k = min(k, bank.shape[0] - (1 if same else 0))
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(d, idx, axis=1)


def region_hash(codes: np.ndarray, seed: int = 0) -> np.ndarray:
    """A 64-bit hash of each row of codes (equal rows give equal hashes; distinct rows collide with
    probability about 2**-63 per pair). Wrapping integer arithmetic: a random linear form modulo 2**64."""
    rng = np.random.default_rng(seed + codes.shape[1])
    w = rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, size=codes.shape[1], dtype=np.int64) | 1
    with np.errstate(over="ignore"):
        return (codes.astype(np.int64) + 1) @ w  # +1: a zero code still moves the hash


def region_ids(codes: Sequence[np.ndarray], *, cumulative: bool = True) -> list[np.ndarray]:
    """Per layer, one hash per input identifying its region: of layers ``1..l`` (``cumulative``) or of
    layer ``l`` alone."""
    out, acc = [], None
    for l, c in enumerate(codes):
        h = region_hash(c, seed=l)
        if cumulative:
            with np.errstate(over="ignore"):
                acc = h if acc is None else acc * np.int64(1000003) + h
            out.append(acc.copy())
        else:
            out.append(h)
    return out


def entropy_bits(ids: np.ndarray) -> float:
    """Shannon entropy (bits) of the histogram of ids; ``log2 n`` when every input has its own id."""
    _, counts = np.unique(ids, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def unit_entropy_bits(codes: np.ndarray) -> float:
    """Mean over units of the entropy (bits) of the piece each unit uses across inputs: 0 when every unit
    always uses the same piece (a linear layer on this data), 1 for balanced ReLUs."""
    n, u = codes.shape
    if n == 0 or u == 0:
        return 0.0
    total = 0.0
    for v in np.unique(codes):
        p = (codes == v).mean(0)
        with np.errstate(divide="ignore", invalid="ignore"):
            total += float(np.nansum(np.where(p > 0, -p * np.log2(p), 0.0)))
    return total / u


def _pair_rate(ids: np.ndarray, mask: np.ndarray) -> float:
    """Fraction of the input pairs selected by ``mask`` (upper triangle) whose ids are equal."""
    same = ids[:, None] == ids[None, :]
    iu = np.triu(np.ones_like(same, dtype=bool), k=1) & mask
    return float(same[iu].mean()) if iu.any() else float("nan")


def code_statistics(
    codes: Sequence[np.ndarray], labels: np.ndarray | None = None, n_pieces: Sequence[int] | None = None
) -> list[dict]:
    """Per-layer code statistics (docs/spline-analyses.md §4(b)A, §2(b)5).

    Parameters
    ----------
    codes : list of ndarray (n, units)
        From :func:`input_codes`.
    labels : ndarray of int, shape (n,), optional
    n_pieces : sequence of int, optional
        Pieces per unit of each layer (2 for ReLU, the window size for max-pool); adds
        ``unit_entropy_normalised``, the unit entropy over its maximum ``log2 R`` (in [0, 1]).

    Returns
    -------
    list of dict, one per layer, with
        ``units``; ``unique_codes`` (layer alone) and ``unique_regions`` (layers 1..l); ``code_entropy_bits``
        and ``region_entropy_bits`` (of the histograms; ``log2 n`` is the maximum); ``unit_entropy_bits``;
        ``mean_hamming``; and with labels: ``same_class_shared_code`` / ``same_class_shared_region`` (fraction
        of same-class pairs in the same cell), ``diff_class_shared_region``, ``hamming_within`` /
        ``hamming_between`` (mean distance within and between classes), ``knn1_accuracy`` (leave-one-out
        1-nearest-neighbour accuracy by Hamming distance).
    """
    n = codes[0].shape[0] if codes else 0
    alone = region_ids(codes, cumulative=False)
    cum = region_ids(codes, cumulative=True)
    y = None if labels is None else np.asarray(labels)
    out = []
    for l, c in enumerate(codes):
        d = hamming(c)
        off = ~np.eye(n, dtype=bool)
        rec = {
            "layer": l + 1,
            "units": int(c.shape[1]),
            "unique_codes": int(np.unique(alone[l]).size),
            "unique_regions": int(np.unique(cum[l]).size),
            "code_entropy_bits": entropy_bits(alone[l]),
            "region_entropy_bits": entropy_bits(cum[l]),
            "unit_entropy_bits": unit_entropy_bits(c),
            **(
                {"unit_entropy_normalised": unit_entropy_bits(c) / np.log2(n_pieces[l])}
                if n_pieces is not None and n_pieces[l] > 1
                else {}
            ),
            "mean_hamming": float(d[off].mean()) if n > 1 else float("nan"),
        }
        if y is not None and n > 1:
            same = y[:, None] == y[None, :]
            rec["same_class_shared_code"] = _pair_rate(alone[l], same)
            rec["same_class_shared_region"] = _pair_rate(cum[l], same)
            rec["diff_class_shared_region"] = _pair_rate(cum[l], ~same)
            rec["hamming_within"] = float(d[same & off].mean()) if (same & off).any() else float("nan")
            rec["hamming_between"] = float(d[~same].mean()) if (~same).any() else float("nan")
            idx, _ = nearest_neighbours(c, k=1)
            rec["knn1_accuracy"] = float((y[idx[:, 0]] == y).mean())
        out.append(rec)
    return out
