"""Quality of generated samples against real ones: k-NN precision and recall, per-cluster coverage.

* :func:`knn_precision_recall` -- Kynkaanniemi et al. (NeurIPS 2019, "Improved precision and recall metric
  for assessing generative models"): each real point gets a ball whose radius is the distance to its k-th
  nearest *other* real point; precision is the share of fakes inside the union of the real balls. Recall is
  the same with the roles swapped (share of reals inside the union of the fake balls).
* :func:`support_components` -- the connected components of the union of the real k-NN balls (two balls
  touch when ``d_ij <= r_i + r_j``): the estimate of the disconnected pieces of the support that the
  precision metric itself uses; tiny components (tail points) are labelled -1.
* :func:`cluster_recall` -- recall restricted to each cluster of the real points, and the share of fakes
  that falls in each cluster's balls and in none ("outside": between the clusters or beyond them).
* :func:`cluster_coverage` -- the same with known cluster centres and a radius (synthetic data with
  known truth): share of fakes within ``radius`` of each centre, and outside all of them.

Definitions and their limits: docs/gan-ensemble.md.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

#: Rows of the distance matrix computed at once (bounds memory at CHUNK x n floats).
CHUNK = 1024


def _as_points(a: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array (n, d), got shape {a.shape}")
    return a


def _sqdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # explicit differences, not the ||a||^2 - 2ab + ||b||^2 expansion: exact zeros for coincident points
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)


def knn_radii(points: np.ndarray, k: int = 3) -> np.ndarray:
    """Distance from each point to its k-th nearest other point of the same set.

    Parameters
    ----------
    points : ndarray, shape (n, d)
    k : int
        Neighbour rank, 1 <= k < n.

    Returns
    -------
    ndarray, shape (n,)
    """
    x = _as_points(points, "points")
    n = x.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"k must be in [1, n - 1] = [1, {n - 1}], got {k}")
    out = np.empty(n)
    for s in range(0, n, CHUNK):
        d2 = _sqdist(x[s : s + CHUNK], x)
        d2[np.arange(d2.shape[0]), np.arange(s, s + d2.shape[0])] = np.inf  # not its own neighbour
        out[s : s + CHUNK] = np.sqrt(np.partition(d2, k - 1, axis=1)[:, k - 1])
    return out


def in_balls(query: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Which query points lie in the union of the balls ``B(centres_i, radii_i)`` (closed balls).

    Returns
    -------
    ndarray of bool, shape (n_query,)
    """
    q = _as_points(query, "query")
    c = _as_points(centres, "centres")
    r2 = np.asarray(radii, dtype=np.float64) ** 2
    out = np.empty(q.shape[0], dtype=bool)
    for s in range(0, q.shape[0], CHUNK):
        out[s : s + CHUNK] = (_sqdist(q[s : s + CHUNK], c) <= r2[None, :]).any(axis=1)
    return out


def knn_precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> dict[str, float]:
    """k-NN precision and recall of generated samples (Kynkaanniemi et al. 2019).

    Parameters
    ----------
    real, fake : ndarray, shape (n_real, d), (n_fake, d)
        Each set needs more than ``k`` points.
    k : int
        Neighbour rank that sets the ball radii (the paper uses 3).

    Returns
    -------
    dict
        ``precision`` (share of fakes inside the union of the real k-NN balls) and ``recall`` (share of reals
        inside the union of the fake k-NN balls), both in [0, 1].
    """
    real = _as_points(real, "real")
    fake = _as_points(fake, "fake")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real and fake differ in dimension: {real.shape[1]} vs {fake.shape[1]}")
    precision = float(in_balls(fake, real, knn_radii(real, k)).mean())
    recall = float(in_balls(real, fake, knn_radii(fake, k)).mean())
    return {"precision": precision, "recall": recall}


def support_components(real: np.ndarray, k: int = 3, min_share: float = 0.02) -> np.ndarray:
    """Label the real points by the connected component of the union of their k-NN balls.

    Parameters
    ----------
    real : ndarray, shape (n, d)
    k : int
        Neighbour rank of the ball radii (as in :func:`knn_precision_recall`).
    min_share : float
        Components holding fewer than this share of the points (isolated tail points) get label -1.

    Returns
    -------
    ndarray of int, shape (n,)
        0, 1, ... by decreasing component size; -1 for points of small components.
    """
    x = _as_points(real, "real")
    r = knn_radii(x, k)
    rows, cols = [], []
    for s in range(0, x.shape[0], CHUNK):
        d = np.sqrt(_sqdist(x[s : s + CHUNK], x))
        i, j = np.nonzero(d <= r[s : s + CHUNK, None] + r[None, :])
        rows.append(i + s)
        cols.append(j)
    i, j = np.concatenate(rows), np.concatenate(cols)
    n = x.shape[0]
    _, comp = connected_components(csr_matrix((np.ones(i.size), (i, j)), shape=(n, n)), directed=False)
    sizes = np.bincount(comp)
    order = np.argsort(-sizes, kind="stable")
    labels = np.full(n, -1, dtype=int)
    for new, old in enumerate(o for o in order if sizes[o] >= min_share * n):
        labels[comp == old] = new
    return labels


def cluster_recall(real: np.ndarray, fake: np.ndarray, labels: np.ndarray, k: int = 3) -> dict[str, np.ndarray | float]:
    """Per-cluster recall and the share of fakes that falls in each cluster's k-NN balls.

    Parameters
    ----------
    real, fake : ndarray, shape (n_real, d), (n_fake, d)
    labels : ndarray of int, shape (n_real,)
        Cluster of each real point, 0..C-1 (-1: ignored, e.g. from :func:`support_components`).
    k : int

    Returns
    -------
    dict
        ``recall`` (C,): share of cluster c's real points inside the union of the fake k-NN balls;
        ``mass`` (C,): share of fakes inside the union of cluster c's real k-NN balls (radii from all real
        points; a fake can count for two clusters whose balls overlap); ``outside``: share of fakes in no
        real ball (= 1 - precision).
    """
    real = _as_points(real, "real")
    fake = _as_points(fake, "fake")
    labels = np.asarray(labels)
    if labels.shape != (real.shape[0],):
        raise ValueError(f"labels must have shape ({real.shape[0]},), got {labels.shape}")
    C = int(labels.max()) + 1 if labels.size and labels.max() >= 0 else 0
    r_real = knn_radii(real, k)
    covered = in_balls(real, fake, knn_radii(fake, k))
    recall = np.array([covered[labels == c].mean() if (labels == c).any() else np.nan for c in range(C)])
    mass = np.array([in_balls(fake, real[labels == c], r_real[labels == c]).mean() if (labels == c).any() else 0.0
                     for c in range(C)])
    outside = float(1.0 - in_balls(fake, real, r_real).mean())
    return {"recall": recall, "mass": mass, "outside": outside}


def cluster_coverage(fake: np.ndarray, centres: np.ndarray, radius: float) -> dict[str, np.ndarray | float]:
    """Share of fakes near each known cluster centre, and between/outside all of them.

    Parameters
    ----------
    fake : ndarray, shape (n, d)
    centres : ndarray, shape (C, d)
        Known cluster centres (synthetic data).
    radius : float
        A fake counts for the nearest centre when within ``radius`` of it (e.g. 3 cluster standard deviations).

    Returns
    -------
    dict
        ``mass`` (C,): share of fakes assigned to each centre; ``outside``: share farther than ``radius``
        from every centre ("mass between clusters"); ``covered``: number of centres holding at least half
        of their fair share, ``1 / (2 C)``, of the fakes.
    """
    f = _as_points(fake, "fake")
    c = _as_points(centres, "centres")
    d = np.sqrt(_sqdist(f, c))
    near = d.argmin(axis=1)
    inside = d[np.arange(f.shape[0]), near] <= radius
    C = c.shape[0]
    mass = np.bincount(near[inside], minlength=C) / f.shape[0]
    return {"mass": mass, "outside": float(1.0 - inside.mean()), "covered": int((mass >= 0.5 / C).sum())}
