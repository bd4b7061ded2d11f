"""Analytical EM for a piecewise-affine generator (models/spline/em_generator.py): is the exact marginal
right, and does EM fit better than a VAE with the same generator?

(a) The analytic ``p(x)`` against a Monte Carlo estimate over ``z`` (with its standard error), for a random
    leaky-ReLU generator with a 1-D and a 2-D latent, at points on, near and far from its manifold.
(b) EM vs a VAE with the same generator family and initialisation, on synthetic 2-D toy sets (the authors'
    'wave' ``(t, cos 1.4 t)``, a circle, two Gaussian clusters; noise 0.1): final exact mean log-likelihood
    on the training set and on a held-out set of the same size, and wall time. The VAE is given the
    two learning rates (the best on the training likelihood is reported) and, for the first seed, a run
    five times longer at that rate.

Data: synthetic only. Run: ``OMP_NUM_THREADS=1 python benchmarks/bench_em_generator.py [--quick]``.
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np
import torch
from scipy import integrate

from scatterbird.models.spline.em_generator import CPAGenerator, fit_em, fit_vae, marginal_log_likelihood

torch.set_num_threads(1)


def toy(name: str, n: int, seed: int) -> np.ndarray:
    """The synthetic 2-D sets (noise std 0.1, as in the authors' ``create_dataset``)."""
    r = np.random.default_rng(seed)
    if name == "wave":
        t = r.uniform(-3, 3, n)
        x = np.stack([t, np.cos(1.4 * t)], 1)
    elif name == "circle":
        t = r.uniform(0, 2 * np.pi, n)
        x = np.stack([np.cos(t), np.sin(t)], 1)
    elif name == "two clusters":
        c = r.choice([-1.0, 1.0], n)
        x = np.stack([2 * c, c], 1) + 0.3 * r.standard_normal((n, 2))
    else:
        raise ValueError(name)
    return x + 0.1 * r.standard_normal(x.shape)


def quadrature_1d(gen: CPAGenerator, sx: float, sz: float, x: np.ndarray) -> float:
    """``p(x)`` by adaptive quadrature over ``z`` (S = 1), split at the generator's breakpoints."""
    bps = gen.regions().lo[1:]
    pts = np.concatenate([[-12 * sz], bps[np.abs(bps) < 12 * sz], [12 * sz]])
    D = len(x)

    def f(z: float) -> float:
        with torch.no_grad():
            g = gen(torch.tensor([[z]], dtype=torch.float64)).numpy()[0]
        prior = np.exp(-0.5 * z * z / sz**2) / np.sqrt(2 * np.pi * sz**2)
        return prior * np.exp(-0.5 * ((x - g) ** 2).sum() / sx**2) / (2 * np.pi * sx**2) ** (D / 2)

    return sum(integrate.quad(f, a, b, epsabs=1e-14, epsrel=1e-12, limit=200)[0] for a, b in itertools.pairwise(pts))


def marginal_vs_mc(n_mc: int) -> list[str]:
    rows = [
        "| S | x | analytic p(x) | MC p(x) | MC SE | z | quadrature p(x) | analytic / quadrature - 1 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    sx, sz, D = 0.3, 1.0, 2
    for S in (1, 2):
        gen = CPAGenerator(S, D, widths=(8,), seed=S)
        rng = np.random.default_rng(S)
        with torch.no_grad():
            on = gen(torch.as_tensor(sz * rng.standard_normal((1, S)))).numpy()[0]
        xs = [on, on + 0.3, on + np.array([1.5, -1.0])]
        ana = np.exp(marginal_log_likelihood(gen, sx, sz, np.array(xs)))
        sums = np.zeros((len(xs), 2))
        done = 0
        while done < n_mc:
            m = min(200_000, n_mc - done)
            with torch.no_grad():
                gz = gen(torch.as_tensor(sz * rng.standard_normal((m, S)))).numpy()
            for i, x in enumerate(xs):
                dens = np.exp(-0.5 * ((gz - x) ** 2).sum(1) / sx**2) / (2 * np.pi * sx**2) ** (D / 2)
                sums[i] += dens.sum(), (dens**2).sum()
            done += m
        for i, x in enumerate(xs):
            mean = sums[i, 0] / n_mc
            se = np.sqrt((sums[i, 1] / n_mc - mean**2) / n_mc)
            q = quadrature_1d(gen, sx, sz, x) if S == 1 else None
            qs = f"{q:.10g} | {ana[i] / q - 1:.1e}" if q is not None else "- | -"
            rows.append(
                f"| {S} | ({x[0]:.2f}, {x[1]:.2f}) | {ana[i]:.10g} | {mean:.6g} | {se:.2g} | "
                f"{(ana[i] - mean) / se:+.2f} | {qs} |"
            )
    return rows


def em_vs_vae(n: int, seeds: list[int], n_iter: int, epochs: int, lrs: list[float], long_epochs: int) -> list[str]:
    rows = [
        "| data | seed | method | train log p | held-out log p | wall s | regions | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    summary, long = {}, {}
    for name in ("wave", "circle", "two clusters"):
        for seed in seeds:
            x, xt = toy(name, n, 2 * seed), toy(name, n, 2 * seed + 1)
            t0 = time.perf_counter()
            em = fit_em(x, latent_dim=1, widths=(8,), n_iter=n_iter, seed=seed)
            t_em = time.perf_counter() - t0
            mono = bool((np.diff(em.history) >= 0).all())
            em_tr, em_te = em.history[-1], float(em.log_likelihood(xt).mean())
            rows.append(
                f"| {name} | {seed} | EM ({len(em.history) - 1} it) | {em_tr:.3f} | {em_te:.3f} | {t_em:.1f} | "
                f"{em.n_regions} | init {em.history[0]:.3f}, history nondecreasing: {mono} |"
            )
            best = None
            t_all = 0.0
            for lr in lrs:
                t0 = time.perf_counter()
                vae = fit_vae(x, latent_dim=1, widths=(8,), epochs=epochs, lr=lr, seed=seed)
                t_all += time.perf_counter() - t0
                if best is None or vae.history[-1] > best[1].history[-1]:
                    best = (lr, vae)
            lr, vae = best
            va_tr, va_te = vae.history[-1], float(vae.log_likelihood(xt).mean())
            rows.append(
                f"| {name} | {seed} | VAE ({epochs} ep, lr {lr:g}) | {va_tr:.3f} | {va_te:.3f} | {t_all:.1f} | "
                f"{vae.n_regions} | best of lr {lrs}; wall = all rates |"
            )
            summary.setdefault(name, []).append((em_tr - va_tr, em_te - va_te))
            if seed == seeds[0] and long_epochs:
                t0 = time.perf_counter()
                vl = fit_vae(x, latent_dim=1, widths=(8,), epochs=long_epochs, lr=lr, seed=seed)
                t_l = time.perf_counter() - t0
                vl_te = float(vl.log_likelihood(xt).mean())
                rows.append(
                    f"| {name} | {seed} | VAE ({long_epochs} ep, lr {lr:g}) | {vl.history[-1]:.3f} | {vl_te:.3f} | "
                    f"{t_l:.1f} | {vl.n_regions} | long run |"
                )
                long[name] = (em_tr - vl.history[-1], em_te - vl_te)
    rows += [
        "",
        (
            f"| data | mean EM - VAE ({epochs} ep), train | held-out | EM ahead on held-out | "
            f"EM - VAE ({long_epochs} ep), train, seed {seeds[0]} | held-out |"
        ),
        "|---|---|---|---|---|---|",
    ]
    for name, d in summary.items():
        d = np.array(d)
        lt, lh = long.get(name, (np.nan, np.nan))
        rows.append(
            f"| {name} | {d[:, 0].mean():+.3f} | {d[:, 1].mean():+.3f} | {(d[:, 1] > 0).sum()}/{len(d)} | "
            f"{lt:+.3f} | {lh:+.3f} |"
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: small sizes")
    args = ap.parse_args()
    if args.quick:
        n_mc, n, seeds, n_iter, epochs, lrs, long_epochs = 100_000, 200, [0], 5, 20, [5e-3], 40
    else:
        n_mc, n, seeds, n_iter, epochs, lrs, long_epochs = 2_000_000, 1000, [0, 1, 2], 30, 300, [1e-2, 5e-3], 1500
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # torch.optim's one-off import, outside the timings
    t0 = time.perf_counter()
    print("## (a) analytic marginal vs Monte Carlo (random generator, widths (8,), D=2, sigma_x=0.3, sigma_z=1)\n")
    print(
        f"Monte Carlo: {n_mc:,} prior draws of z, the same draws for the three points of a generator (their "
        "errors are correlated); z = (analytic - MC) / SE. Quadrature (S = 1): scipy.integrate.quad over z "
        "split at the breakpoints.\n"
    )
    print("\n".join(marginal_vs_mc(n_mc)))
    print(f"\n## (b) EM vs VAE, same generator (S=1, widths (8,)), synthetic 2-D sets, n = {n} train / {n} held-out\n")
    print("\n".join(em_vs_vae(n, seeds, n_iter, epochs, lrs, long_epochs)))
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
