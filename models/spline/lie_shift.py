"""The 2-torus of circular fractional shifts acting on scattergram windows (time shift, log-frequency shift).

A window is an array (C, w): C channels, w frames. The group element ``theta = (theta_t, theta_f)`` acts by

* a circular shift by ``theta_t`` frames along time, on every channel;
* a circular shift by ``theta_f`` channels along the *frequency block* (the first-order channels, in their
  order in the window; a shift of one channel is a 1/Q1-octave shift), identity on the other channels.

A fractional shift is the band-limited (Fourier) one: multiply the DFT of the axis by
``exp(-2 pi i nu_k theta)`` with the signed frequencies ``nu_k`` of :func:`shift_frequencies`. The two shifts
commute, each is orthogonal, and ``T(a) T(b) = T(a + b)`` holds exactly, so this is a linear action of the
Lie group R^2 (periodic: a torus) with skew-symmetric generators ``L_t, L_f``, ``T(theta) = expm(theta_t L_t
+ theta_f L_f)`` (:func:`shift_generator`). On an axis of odd length ``T(integer m)`` is ``np.roll`` by m. On
an even axis no real one-parameter group reaches the roll (its Nyquist eigenvalue -1 has no real
logarithm), so the Nyquist component is left in place (``nu = 0``): the action stays an exact, orthogonal
group, and ``T(m)`` equals the roll for even m and differs from it only in that alternating component for
odd m.

:func:`best_shift` finds ``argmax_theta <B, T(theta) A>`` (equivalently ``argmin ||B - T(theta) A||``, T being
orthogonal) for batches of window-shaped matrices: the inner product is a 2-D trigonometric polynomial in
theta, evaluated on a grid over the whole torus and refined by Newton steps on its closed-form derivatives.

Derivation: docs/group-autoencoder.md.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def shift_frequencies(n: int) -> np.ndarray:
    """Signed frequencies (cycles per sample) of an axis of length ``n`` in FFT order; 0 at Nyquist (even n).

    ``T(theta)`` multiplies DFT bin k by ``exp(-2 pi i nu_k theta)``; ``nu_{n-k} = -nu_k``, so real inputs stay
    real.
    """
    nu = np.fft.fftfreq(int(n))
    if n % 2 == 0:
        nu[n // 2] = 0.0  # the Nyquist bin: no real one-parameter group moves it (see the module docstring)
    return nu


def shift_matrix(n: int, theta: float) -> np.ndarray:
    """The (n, n) real orthogonal matrix of the circular fractional shift by ``theta`` samples.

    ``shift_matrix(n, theta) @ x`` shifts ``x`` towards higher indices (``np.roll(x, 1)`` for ``theta = 1``,
    odd n).
    """
    eye = np.eye(int(n))
    phase = np.exp(-2j * np.pi * shift_frequencies(n) * float(theta))
    return np.real(np.fft.ifft(np.fft.fft(eye, axis=0) * phase[:, None], axis=0))


def shift_generator(n: int) -> np.ndarray:
    """The real skew-symmetric generator ``L`` of the shifts: ``expm(theta L) = shift_matrix(n, theta)``."""
    n = int(n)
    f = np.fft.fft(np.eye(n), axis=0)
    return np.real(np.fft.ifft(f * (-2j * np.pi * shift_frequencies(n))[:, None], axis=0))


def frequency_block(first_order: np.ndarray | torch.Tensor | None, n_channels: int) -> np.ndarray:
    """Indices of the channels on the frequency axis: those flagged by the boolean mask ``first_order``, or
    every channel when it is None (a window without channel metadata)."""
    if first_order is None:
        return np.arange(int(n_channels))
    mask = np.asarray(first_order, dtype=bool)
    if mask.shape != (int(n_channels),):
        raise ValueError(f"first_order: expected a boolean mask of shape ({n_channels},), got {mask.shape}")
    return np.flatnonzero(mask)


def _phase(n: int, theta: torch.Tensor) -> torch.Tensor:
    """exp(-2 pi i nu theta) for a batch of shifts: (batch, n) complex."""
    nu = torch.as_tensor(shift_frequencies(n), dtype=theta.dtype, device=theta.device)
    return torch.exp(-2j * math.pi * theta[:, None] * nu[None, :])


def _take(x: torch.Tensor, index: np.ndarray, dim: int) -> torch.Tensor:
    """``x`` restricted to ``index`` along ``dim`` (a view when the index is a contiguous run)."""
    if len(index) and np.array_equal(index, np.arange(index[0], index[0] + len(index))):
        return x.narrow(dim, int(index[0]), len(index))
    return x.index_select(dim, torch.as_tensor(index, device=x.device))


def apply_shift(
    x: torch.Tensor, theta_t: torch.Tensor, theta_f: torch.Tensor, freq_index: np.ndarray
) -> torch.Tensor:
    """``T(theta_b) x_b`` for a batch of windows ``x`` (batch, ..., C, w) and per-item shifts (batch,).

    Differentiable with respect to ``x`` (not needed with respect to theta: see :func:`best_shift`).
    """
    w = x.shape[-1]
    out = torch.fft.ifft(torch.fft.fft(x, dim=-1) * _phase(w, theta_t).reshape(-1, *([1] * (x.dim() - 2)), w),
                         dim=-1).real
    if len(freq_index) > 1:  # a block of one channel has nothing to shift along
        block = _take(out, freq_index, -2)
        ph = _phase(len(freq_index), theta_f).reshape(-1, *([1] * (x.dim() - 3)), len(freq_index), 1)
        moved = torch.fft.ifft(torch.fft.fft(block, dim=-2) * ph, dim=-2).real
        out = out.index_copy(-2, torch.as_tensor(freq_index, device=x.device), moved)
    return out


def shift_windows(
    windows: np.ndarray | torch.Tensor,
    theta_t: float,
    theta_f: float,
    first_order: np.ndarray | None = None,
) -> np.ndarray | torch.Tensor:
    """The group action ``T(theta_t, theta_f)`` on windows (n, C, w) (or one window (C, w)).

    Parameters
    ----------
    windows : ndarray or Tensor, shape (n, C, w) or (C, w)
    theta_t : float
        Time shift in frames (positive: later).
    theta_f : float
        Shift along the frequency block, in channels (positive: towards higher channel indices).
    first_order : ndarray of bool, shape (C,), optional
        The channels on the frequency axis (the first-order scattering channels); None: every channel.

    Returns
    -------
    ndarray or Tensor
        Same type, shape and dtype as ``windows``.
    """
    is_numpy = not isinstance(windows, torch.Tensor)
    x = torch.as_tensor(np.asarray(windows, dtype=np.float64)) if is_numpy else windows
    single = x.dim() == 2
    if single:
        x = x[None]
    if x.dim() != 3:
        raise ValueError(f"windows: expected shape (n, C, w) or (C, w), got {tuple(x.shape)}")
    dtype = x.dtype if x.is_floating_point() else torch.float64
    x = x.to(dtype)
    n = x.shape[0]
    tt = torch.full((n,), float(theta_t), dtype=dtype, device=x.device)
    tf = torch.full((n,), float(theta_f), dtype=dtype, device=x.device)
    out = apply_shift(x, tt, tf, frequency_block(first_order, x.shape[1]))
    if single:
        out = out[0]
    if is_numpy:
        return out.numpy().astype(np.asarray(windows).dtype if np.asarray(windows).dtype.kind == "f" else np.float64)
    return out


# -- the best group element relating two window-shaped matrices -------------------------------------------
def _spectra(A: torch.Tensor, B: torch.Tensor, freq_index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-spectra of ``<B, T(theta) A>`` for A, B (P, m, C, w): the frequency block's (P, F, w) (2-D DFT
    over channel-in-block and time) and the other channels' (P, w) (time DFT); Parseval-normalised."""
    C, w = A.shape[-2], A.shape[-1]
    rest = np.setdiff1d(np.arange(C), freq_index)
    if len(rest):
        fa, fb = torch.fft.fft(_take(A, rest, -2), dim=-1), torch.fft.fft(_take(B, rest, -2), dim=-1)
        q = (fb.conj() * fa).sum(dim=(1, 2)) / w  # (P, w)
    else:
        q = torch.zeros(A.shape[0], w, dtype=torch.complex128 if A.dtype == torch.float64 else torch.complex64)
    if len(freq_index):
        F = len(freq_index)
        ga, gb = torch.fft.fft2(_take(A, freq_index, -2)), torch.fft.fft2(_take(B, freq_index, -2))
        p = (gb.conj() * ga).sum(dim=1) / (F * w)  # (P, F, w)
    else:
        p = torch.zeros(A.shape[0], 1, w, dtype=q.dtype)
    return p, q


def _poly(p: torch.Tensor, q: torch.Tensor, nu: torch.Tensor, mu: torch.Tensor, tt: torch.Tensor, tf: torch.Tensor):
    """The trigonometric polynomial c(theta) = <B, T(theta) A>, its gradient and Hessian, at (P,) points."""
    et = torch.exp(-2j * math.pi * tt[:, None] * nu[None, :])  # (P, w)
    ef = torch.exp(-2j * math.pi * tf[:, None] * mu[None, :])  # (P, F)
    at = (-2j * math.pi * nu).expand(len(mu), -1)  # d/dtheta_t factor of each (F, w) term
    af = (-2j * math.pi * mu)[:, None].expand(-1, len(nu))
    one = torch.ones_like(at)
    # the factors of c, dc/dt, dc/df, d2c/dt2, d2c/df2, d2c/dtdf, summed in one contraction
    fac = torch.stack([one, at, af, at * at, af * af, at * af])  # (6, F, w)
    v = torch.einsum("pfw,pf,pw,kfw->pk", p, ef, et, fac).real
    u = torch.einsum("pw,pw,kw->pk", q, et, fac[[0, 1, 3], 0]).real  # the time-only channels
    c = v[:, 0] + u[:, 0]
    g = torch.stack([v[:, 1] + u[:, 1], v[:, 2]], -1)
    htt, hff, htf = v[:, 3] + u[:, 2], v[:, 4], v[:, 5]
    H = torch.stack([torch.stack([htt, htf], -1), torch.stack([htf, hff], -1)], -2)
    return c, g, H


@torch.no_grad()
def best_shift(
    A: torch.Tensor,
    B: torch.Tensor,
    first_order: np.ndarray | None = None,
    *,
    grid: int = 2,
    newton_steps: int = 8,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``theta* = argmax_theta <B, T(theta) A>`` over the torus, for batches of matrices with columns shaped
    like windows.

    Parameters
    ----------
    A, B : Tensor, shape (P, m, C, w)
        P pairs of m window-shaped columns each (e.g. the slopes of two decoder regions, columns = latent
        directions).
    first_order : ndarray of bool, shape (C,), optional
        The frequency block (see :func:`shift_windows`).
    grid : int
        Grid points per unit shift on each axis for the coarse search (over the whole torus).
    newton_steps : int
        Newton refinements of the best grid point (a step is kept only when it raises the inner product).

    Returns
    -------
    theta_t, theta_f : Tensor, shape (P,)
    inner : Tensor, shape (P,)
        ``<B, T(theta*) A>`` (Frobenius inner product, summed over the m columns).
    """
    C, w = A.shape[-2], A.shape[-1]
    fi = frequency_block(first_order, C)
    F = len(fi) if len(fi) > 1 else 0  # a single channel cannot move: no frequency axis
    if F == 0:
        fi = np.zeros(0, dtype=np.int64)
    dt = A.dtype  # float64 where exactness matters (tests); float32 in training steps
    B = B.to(dt)
    p, q = _spectra(A, B, fi)
    nu = torch.as_tensor(shift_frequencies(w), dtype=dt, device=A.device)
    mu = torch.as_tensor(shift_frequencies(F) if F else np.zeros(1), dtype=dt, device=A.device)
    # coarse grid over the whole torus [-w/2, w/2) x [-F/2, F/2)
    gt = torch.arange(-w * grid // 2, (w * grid + 1) // 2, dtype=dt, device=A.device) / grid
    gf = (torch.arange(-F * grid // 2, (F * grid + 1) // 2, dtype=dt, device=A.device) / grid) if F else A.new_zeros(1, dtype=dt)
    et = torch.exp(-2j * math.pi * gt[:, None] * nu[None, :])  # (Gt, w)
    ef = torch.exp(-2j * math.pi * gf[:, None] * mu[None, :])  # (Gf, F)
    cg = torch.einsum("pfw,aw,bf->pab", p, et, ef).real + torch.einsum("pw,aw->pa", q, et).real[:, :, None]
    best = cg.flatten(1).argmax(1)
    tt, tf = gt[best // len(gf)].clone(), gf[best % len(gf)].clone()
    c, g, H = _poly(p, q, nu, mu, tt, tf)
    for _ in range(int(newton_steps)):
        if not F:  # one axis: the frequency derivatives are 0
            g = g.clone()
            H = H.clone()
            g[:, 1] = 0.0
            H[:, 1, :] = 0.0
            H[:, :, 1] = 0.0
            H[:, 1, 1] = -1.0
        # Newton step towards the maximum; where the Hessian is not negative definite, a gradient step
        neg_def = (H[:, 0, 0] < 0) & (torch.linalg.det(H) > 0)
        safe = torch.where(neg_def[:, None, None], H, -torch.eye(2, dtype=dt, device=A.device).expand_as(H))
        step = -torch.linalg.solve(safe, g[..., None])[..., 0]
        step = step.clamp(-0.5, 0.5)  # stay within the grid cell's basin
        nt, nf = tt + step[:, 0], tf + step[:, 1]
        c2, g2, H2 = _poly(p, q, nu, mu, nt, nf)
        ok = c2 >= c
        tt, tf = torch.where(ok, nt, tt), torch.where(ok, nf, tf)
        c = torch.where(ok, c2, c)
        g = torch.where(ok[:, None], g2, g)
        H = torch.where(ok[:, None, None], H2, H)
    # wrap onto the torus' fundamental domain
    tt = torch.remainder(tt + w / 2, w) - w / 2
    if F:
        tf = torch.remainder(tf + F / 2, F) - F / 2
    return tt, tf, c
