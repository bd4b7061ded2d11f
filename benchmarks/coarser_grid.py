"""How far kymatio's subsampling grid could be coarsened before first-order output leaves kymatio agreement.

    .venv/bin/python benchmarks/coarser_grid.py [--seconds 12]

kymatio subsamples each first-order wavelet's coefficients only as far as the filter's *upper frequency*
allows, which leaves ~18 complex coefficients per audio sample with J=9, Q=(8,1) (10 filters at the full
rate). A filter's *bandwidth* allows more: its coefficients can be taken every ``2**k`` samples as long as
its support (bins above 1e-8 of its peak) fits in ``n / 2**k`` bins (complex band-pass sampling, exact for
the coefficients themselves). The modulus is not band-limited, though, so its low-pass (S1) on the coarser
grid aliases. This script measures, on the test suite's bird-like signal (noise plus chirps), how far S1
moves when each filter is subsampled one or two levels further (up to what its band allows), relative to
each channel's maximum, and how many coefficients per sample that grid keeps. The tests pin kymatio
agreement at 1e-3 (max) and 1e-5 (median) of each channel's maximum.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the test signals

from kymatio.scattering1d.filter_bank import periodize_filter_fourier  # noqa: E402
from test_scattering import birdish  # noqa: E402

from scatterbird.pipeline.config import FeatureConfig  # noqa: E402
from scatterbird.pipeline.frontend.bands import band, band_run as _run  # noqa: E402
from scatterbird.pipeline.frontend.scattering import Scattering, modulus  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=12.0)
    args = ap.parse_args()
    c = FeatureConfig(threshold="none")
    sc = Scattering(c)
    lt = c.J
    n = 1 << int(np.ceil(np.log2(args.seconds * c.sample_rate)))
    x = torch.from_numpy(birdish(n, c.sample_rate, seed=5))[None]
    X = torch.fft.fft(x)
    phi0 = sc._filter(n, None)
    ks = sc.first_order_k()
    per_sample = {0: 0.0, 1: 0.0, 2: 0.0}
    errors: dict[int, list[float]] = {1: [], 2: []}
    for i, meta in enumerate(sc._psi1_meta):
        h = sc._filter(n, meta)
        k = int(ks[i])
        k_band = int(np.floor(np.log2(n / _run(h, 1e-8)[1])))  # coarsest grid the filter's band allows
        S = {}
        for extra in (0, 1, 2):
            kk = min(max(k, min(k + extra, k_band)), lt)
            per_sample[extra] += 2.0**-kk
            u = torch.fft.ifft(band(h, kk).apply(X))
            low = band(periodize_filter_fourier(phi0, 2**kk), lt - kk, half=True)
            # kymatio's scaling: the low-pass periodised to level kk carries a factor 2**-kk
            S[extra] = torch.fft.ifft(low.apply(torch.fft.rfft(modulus(u)))).real[0].numpy() * 2.0 ** (kk - k)
        ref = S[0][8:-8]
        for extra in (1, 2):
            errors[extra].append(float(np.abs(S[extra][8:-8] - ref).max() / np.abs(ref).max()))
    print(f"{n} samples ({n / c.sample_rate:.1f} s) at {c.sample_rate} Hz; J={c.J} Q=({c.Q1},{c.Q2}); "
          f"{len(sc._psi1_meta)} first-order filters")
    print(f"kymatio's grid: {per_sample[0]:.2f} complex first-order coefficients per audio sample")
    for extra in (1, 2):
        e = np.array(errors[extra])
        print(f"up to {extra} level(s) coarser where the band allows: {per_sample[extra]:.2f} per sample "
              f"({per_sample[0] / per_sample[extra]:.2f}x fewer); S1 moves by up to {e.max():.2e} of its channel's "
              f"maximum (worst channel; median channel {np.median(e):.2e}); the tests allow 1e-3")


if __name__ == "__main__":
    main()
