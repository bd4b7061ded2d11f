"""Ensembles of piecewise-affine GAN generators with a parameter-coupling regulariser, for disconnected data.

After Luzi, Balestriero & Baraniuk, "Ensembles of Generative Adversarial Networks for Disconnected Data"
(arXiv 2006.14600; ICLR-2021 submission KcLlh3Qe7KU): a continuous generator of a connected latent cannot
put all its mass on a disconnected support, an ensemble of K generators can, and a regulariser that ties
the generators' parameters together moves between the independent ensemble (lambda = 0) and one generator
(lambda -> infinity). Objective trained here, with one discriminator D shared by the ensemble (it sees the
mixture ``sum_k pi_k G_k``, the distribution the ensemble samples from):

    D:  max  E_x log D(x) + sum_k pi_k E_z log(1 - D(G_k(z)))
    G:  min  sum_k pi_k E_z [-log D(G_k(z))]  +  lambda * sum_{k<j} ||theta_k - theta_j||^2

(non-saturating generator loss). The mixture weights pi_k are fixed (uniform by default, or given); they are
not learned, since a learned pi in the generator loss would shift mass to whichever generator fools D best.

**Unverified reconstruction:** the paper's own regulariser could not be read (only its abstract and
introduction were found, in stored copies of arXiv 2006.14600 and of the OpenReview text; no authors'
code was found). The coupling term above is the spec's reconstruction (../shared/papers/spline-analysis.md
§7.1), computed with O(K) rather than O(K^2) parameter-vector operations as
``K * sum_k ||theta_k - theta_bar||^2``. Derivations, metrics and limits:
docs/gan-ensemble.md.

Optimisation: Adam on the GAN losses; the coupling term is applied after each generator step as its exact
proximal step (:func:`couple_step`, step ``lr * lambda``), which shrinks each generator towards the mean
generator by ``1 / (1 + 2 K lr lambda)``. Through Adam any lambda that dominates the gradient would act
alike (Adam normalises step sizes), so the limit lambda -> infinity would never be reached at a finite
learning rate. Consequence: the effect of lambda scales with ``lr`` and ``steps``. The discriminator has an
R1 gradient penalty; without it, on well-separated clusters, the shared discriminator goes flat and each
generator collapses to a point.

Generators are leaky-ReLU MLPs (continuous piecewise-affine, so :mod:`models.spline.network` can view
them); data are standardised per dimension inside :func:`fit_gan_ensemble` and samples are returned in the
original units; training runs in float32.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .sample_quality import cluster_coverage, cluster_recall, knn_precision_recall, support_components

#: Negative slope of the leaky ReLUs (generators and discriminator).
LEAKY_SLOPE = 0.2


def make_mlp(d_in: int, d_out: int, widths: Sequence[int], slope: float = LEAKY_SLOPE) -> nn.Sequential:
    """A leaky-ReLU MLP ``d_in -> widths... -> d_out`` (continuous piecewise-affine)."""
    layers: list[nn.Module] = []
    d = int(d_in)
    for w in widths:
        layers += [nn.Linear(d, int(w)), nn.LeakyReLU(slope)]
        d = int(w)
    layers.append(nn.Linear(d, int(d_out)))
    return nn.Sequential(*layers)


def flat_parameters(module: nn.Module) -> torch.Tensor:
    """All parameters of ``module`` as one vector (differentiable)."""
    return torch.cat([p.reshape(-1) for p in module.parameters()])


def coupling_penalty(generators: Sequence[nn.Module]) -> torch.Tensor:
    """Coupling regulariser ``sum_{k<j} ||theta_k - theta_j||^2`` over the generators' parameter vectors.

    Computed as ``K * sum_k ||theta_k - theta_bar||^2`` (the same quantity, O(K) instead of O(K^2)).
    Unverified reconstruction of the paper's regulariser (module docstring).

    Parameters
    ----------
    generators : sequence of nn.Module
        Modules with parameters of the same shapes, in the same order.

    Returns
    -------
    torch.Tensor
        Scalar, differentiable with respect to every generator's parameters; 0 for K <= 1.
    """
    gens = list(generators)
    if not gens:
        raise ValueError("no generators")
    shapes = [tuple(tuple(p.shape) for p in g.parameters()) for g in gens]
    if any(s != shapes[0] for s in shapes):
        raise ValueError("the generators' parameters differ in shape; the coupling needs one architecture")
    theta = torch.stack([flat_parameters(g) for g in gens])  # (K, P)
    K = theta.shape[0]
    return K * ((theta - theta.mean(0, keepdim=True)) ** 2).sum()


@torch.no_grad()
def couple_step(generators: Sequence[nn.Module], step: float) -> None:
    """Proximal step on the coupling penalty, in place: ``argmin_theta ||theta - theta_old||^2 / (2 step)
    + coupling_penalty(theta)``.

    The mean ``theta_bar`` is kept and each deviation shrinks: ``theta_k <- theta_bar + (theta_k - theta_bar)
    / (1 + 2 K step)``. It is the implicit (always stable) form of a gradient step of size ``step`` on the
    penalty; :func:`fit_gan_ensemble` takes it with ``step = lr * lambda`` after each Adam step on the GAN loss,
    because through Adam every lambda large enough to dominate the gradient would act alike (Adam normalises
    the step), so lambda would lose its meaning (docs/gan-ensemble.md).
    """
    gens = list(generators)
    K = len(gens)
    shrink = 1.0 / (1.0 + 2.0 * K * float(step))
    for ps in zip(*(g.parameters() for g in gens)):
        bar = torch.stack(ps).mean(0)
        for p in ps:
            p.copy_(bar + (p - bar) * shrink)


def generator_loss(
    generators: Sequence[nn.Module],
    discriminator: nn.Module,
    z: Sequence[torch.Tensor],
    weights: Sequence[float],
    coupling: float,
) -> torch.Tensor:
    """Generator objective: ``sum_k pi_k mean(-log D(G_k(z_k))) + coupling * coupling_penalty``.

    Parameters
    ----------
    generators, discriminator : nn.Module
    z : sequence of torch.Tensor
        One latent batch per generator.
    weights : sequence of float
        Mixture weights pi_k.
    coupling : float
        lambda.
    """
    loss = sum(
        float(w) * F.softplus(-discriminator(g(zk))).mean() for g, zk, w in zip(generators, z, weights)
    )  # softplus(-l) = -log sigmoid(l): the non-saturating loss
    if coupling:
        loss = loss + coupling * coupling_penalty(generators)
    return loss


@dataclass
class GANEnsemble:
    """A trained ensemble: K generators, their mixture weights and the standardisation of the data.

    Attributes
    ----------
    generators : list of nn.Module
        Leaky-ReLU MLPs from ``latent_dim`` to the data dimension, in standardised units.
    weights : ndarray, shape (K,)
        Mixture weights pi_k (fixed during training).
    coupling : float
        lambda the ensemble was trained with.
    latent_dim : int
        Latent dimension; z ~ N(0, I).
    history : dict of str to list of float
        Per training step: ``d_loss``, ``g_loss`` (without the penalty), ``penalty``.
    mean, scale : ndarray, shape (d,)
        Standardisation: data = mean + scale * generator output.
    discriminator : nn.Module, optional
    """

    generators: list[nn.Module]
    weights: np.ndarray
    coupling: float
    latent_dim: int
    history: dict[str, list[float]]
    mean: np.ndarray = field(default_factory=lambda: np.zeros(1))
    scale: np.ndarray = field(default_factory=lambda: np.ones(1))
    discriminator: nn.Module | None = None

    @property
    def n_generators(self) -> int:
        return len(self.generators)

    def sample(
        self, n: int, seed: int = 0, return_component: bool = False
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Draw ``n`` samples: generator k with probability pi_k, then z ~ N(0, I).

        Parameters
        ----------
        n : int
        seed : int
        return_component : bool
            Also return which generator made each sample.

        Returns
        -------
        x : ndarray, float64, shape (n, d)
            In the units of the training data.
        component : ndarray of int, shape (n,)
            Only with ``return_component``.
        """
        rng = np.random.default_rng(seed)
        comp = rng.choice(self.n_generators, size=int(n), p=np.asarray(self.weights, dtype=float))
        z = rng.standard_normal((int(n), self.latent_dim)).astype(np.float32)
        d = int(np.size(self.mean))
        out = np.empty((int(n), d))
        with torch.no_grad():
            for k, g in enumerate(self.generators):
                idx = np.nonzero(comp == k)[0]
                if idx.size:
                    out[idx] = g(torch.from_numpy(z[idx])).double().numpy()
        x = self.mean + self.scale * out
        return (x, comp) if return_component else x

    def parameter_spread(self) -> float:
        """Mean ``||theta_k - theta_bar|| / ||theta_bar||`` over the generators (0 when all are equal)."""
        with torch.no_grad():
            theta = torch.stack([flat_parameters(g).double() for g in self.generators])
            bar = theta.mean(0)
            return float((theta - bar).norm(dim=1).mean() / bar.norm().clamp_min(1e-30))


def fit_gan_ensemble(
    x: np.ndarray,
    n_generators: int = 3,
    coupling: float = 0.0,
    latent_dim: int = 2,
    widths: Sequence[int] = (32, 32),
    steps: int = 1500,
    batch: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
    *,
    weights: Sequence[float] | None = None,
    disc_widths: Sequence[int] = (64, 64),
    r1: float = 1.0,
) -> GANEnsemble:
    """Train K leaky-ReLU generators as a GAN ensemble with the coupling regulariser.

    Parameters
    ----------
    x : ndarray, shape (n, d)
        Training points (standardised per dimension inside; samples come back in these units).
    n_generators : int
        K (1 gives a single GAN).
    coupling : float
        lambda >= 0: 0 trains an independent ensemble (each generator's gradient depends only on its own
        parameters and the shared discriminator), large values tie the generators into one.
    latent_dim : int
    widths : sequence of int
        Hidden widths of each generator.
    steps : int
        Alternating discriminator/generator updates (Adam, betas (0.5, 0.999)).
    batch : int
        Real points per step; each generator makes ``ceil(batch * pi_k)`` fakes.
    lr : float
        Adam step size of both players.
    seed : int
        Seeds initialisation and batches (the global torch RNG is left as it was).
    progress : callable, optional
        Called with the step index after each step.
    weights : sequence of float, optional
        Fixed mixture weights pi (default uniform).
    disc_widths : sequence of int
        Hidden widths of the discriminator.
    r1 : float
        Weight gamma of the discriminator's R1 gradient penalty ``gamma / 2 * E_real ||grad_x D(x)||^2``
        (standardised units); 0 turns it off.

    Returns
    -------
    GANEnsemble
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"x must be a 2-D array with at least 2 rows, got shape {x.shape}")
    if n_generators < 1 or coupling < 0:
        raise ValueError("need n_generators >= 1 and coupling >= 0")
    K = int(n_generators)
    pi = np.full(K, 1.0 / K) if weights is None else np.asarray(weights, dtype=float)
    if pi.shape != (K,) or (pi < 0).any() or not np.isclose(pi.sum(), 1.0):
        raise ValueError(f"weights must be {K} non-negative numbers summing to 1")
    mean = x.mean(0)
    scale = x.std(0)
    scale = np.where(scale > 0, scale, 1.0)
    data = torch.from_numpy(((x - mean) / scale).astype(np.float32))
    n, d = data.shape
    m = [max(1, int(np.ceil(batch * p))) for p in pi]  # fakes per generator and step
    w_fake = torch.cat([torch.full((mk, 1), float(p) / mk) for p, mk in zip(pi, m)])
    hist: dict[str, list[float]] = {"d_loss": [], "g_loss": [], "penalty": []}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gens = [make_mlp(latent_dim, d, widths) for _ in range(K)]  # independent initialisations
        disc = make_mlp(d, 1, disc_widths)
        opt_g = torch.optim.Adam([p for g in gens for p in g.parameters()], lr=lr, betas=(0.5, 0.999))
        opt_d = torch.optim.Adam(disc.parameters(), lr=lr, betas=(0.5, 0.999))
        for step in range(int(steps)):
            real = data[torch.randint(0, n, (batch,))]
            # one discriminator call on all generators' fakes, each weighted pi_k / m_k (= the pi-weighted mean)
            fake = torch.cat([g(torch.randn(mk, latent_dim)) for g, mk in zip(gens, m)])
            # discriminator: real vs the mixture's fakes, fakes detached
            if r1:
                real.requires_grad_(True)
            d_real = disc(real)
            d_loss = F.softplus(-d_real).mean() + (w_fake * F.softplus(disc(fake.detach()))).sum()
            if r1:
                # R1 penalty (Mescheder et al. 2018): without it the shared D goes flat and each generator
                # shrinks to a point that circles inside its cluster
                (grad,) = torch.autograd.grad(d_real.sum(), real, create_graph=True)
                d_loss = d_loss + 0.5 * r1 * grad.pow(2).sum(1).mean()
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            # generators, on the same fakes against the updated discriminator (= generator_loss)
            g_adv = (w_fake * F.softplus(-disc(fake))).sum()
            opt_g.zero_grad(set_to_none=True)
            g_adv.backward()
            opt_g.step()
            if coupling and K > 1:
                couple_step(gens, lr * coupling)
            with torch.no_grad():
                pen = coupling_penalty(gens) if K > 1 else torch.zeros(())  # recorded even at lambda = 0
            hist["d_loss"].append(float(d_loss.detach()))
            hist["g_loss"].append(float(g_adv.detach()))
            hist["penalty"].append(float(pen.detach()))
            if progress is not None:
                progress(step)
    for g in gens:
        g.eval()
    return GANEnsemble(gens, pi, float(coupling), int(latent_dim), hist, mean, scale, disc)


def sweep_coupling(
    x: np.ndarray,
    couplings: Sequence[float],
    n_generators: int = 3,
    latent_dim: int = 2,
    widths: Sequence[int] = (32, 32),
    steps: int = 1500,
    batch: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    *,
    k: int = 3,
    n_samples: int | None = None,
    labels: np.ndarray | None = None,
    centres: np.ndarray | None = None,
    radius: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[dict]:
    """Fit one ensemble per lambda and measure its samples.

    Parameters
    ----------
    x : ndarray, shape (n, d)
    couplings : sequence of float
        The lambdas.
    n_generators, latent_dim, widths, steps, batch, lr, seed
        As in :func:`fit_gan_ensemble` (same seed for every lambda, so only lambda differs).
    k : int
        Neighbour rank of the k-NN metrics.
    n_samples : int, optional
        Fakes drawn per lambda (default ``len(x)``, so precision and recall compare equal-sized sets).
    labels : ndarray of int, shape (n,), optional
        Cluster of each point (call type); default: :func:`support_components` of ``x``.
    centres, radius : optional
        Known cluster centres and radius: adds :func:`cluster_coverage` (``mass_between``, ``centre_mass``).
    progress : callable, optional
        Called with the step index during each fit.

    Returns
    -------
    list of dict
        One row per lambda: ``coupling``, ``precision``, ``recall``, ``cluster_coverage`` (per-cluster
        recall, array), ``clusters_covered`` (clusters with recall >= 0.5), ``cluster_mass`` (share of fakes
        per cluster, array), ``outside`` (share of fakes in no real k-NN ball), ``parameter_spread``,
        ``seconds`` (training time), ``samples`` (array (n_samples, d)), ``component`` (generator of each
        sample) and, with centres, ``mass_between`` and ``centre_mass``.
    """
    x = np.asarray(x, dtype=np.float64)
    lab = support_components(x, k) if labels is None else np.asarray(labels)
    ns = int(n_samples or x.shape[0])
    rows = []
    for lam in couplings:
        t0 = time.perf_counter()
        ens = fit_gan_ensemble(x, n_generators, float(lam), latent_dim, widths, steps, batch, lr, seed, progress)
        secs = time.perf_counter() - t0
        fake, comp = ens.sample(ns, seed=seed + 1, return_component=True)
        pr = knn_precision_recall(x, fake, k)
        cr = cluster_recall(x, fake, lab, k)
        row = {
            "coupling": float(lam),
            "precision": pr["precision"],
            "recall": pr["recall"],
            "cluster_coverage": cr["recall"],
            "clusters_covered": int(np.sum(cr["recall"] >= 0.5)),
            "cluster_mass": cr["mass"],
            "outside": cr["outside"],
            "parameter_spread": ens.parameter_spread(),
            "seconds": secs,
            "samples": fake,
            "component": comp,
        }
        if centres is not None and radius is not None:
            cc = cluster_coverage(fake, centres, radius)
            row["mass_between"] = cc["outside"]
            row["centre_mass"] = cc["mass"]
        rows.append(row)
    return rows
