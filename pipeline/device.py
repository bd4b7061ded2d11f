"""Where the compute runs: the ``--device`` option (``cpu``, ``cuda``, ``cuda:N``, ``auto``).

:func:`resolve_device` turns a name into a :class:`torch.device` and refuses, with a message a user can act
on, a name it does not know or a CUDA device this machine does not have; the commands call it before any
work starts. :func:`detector_on` lets a detector score (and fit) on a device for the length of a block, where
the detector can: one that has a ``device`` attribute (the inversion network) computes there, any other one
keeps computing on the CPU. The front end's device is given to
:func:`scatterbird.pipeline.frontend.features.scattering_for`.

The CPU is the default everywhere; nothing here needs a GPU to be importable or tested.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from scatterbird.errors import OptionError

#: The names ``--device`` offers (``cuda:N`` is accepted too: the N-th CUDA device).
DEVICE_CHOICES = ("cpu", "cuda", "auto")


def _build() -> str:
    """This PyTorch build, in words, for the message of a missing CUDA device."""
    return f"this PyTorch build: {torch.__version__}, CUDA {torch.version.cuda or 'none'}"


def resolve_device(name: str | torch.device, option: str = "--device") -> torch.device:
    """The device a name stands for, checked against this machine.

    Parameters
    ----------
    name : str or torch.device
        ``"cpu"``; ``"cuda"`` (the current CUDA device); ``"cuda:N"`` (the N-th, from 0); ``"auto"`` (CUDA when
        a CUDA device is usable, else the CPU). Case and surrounding spaces are ignored.
    option : str
        How the caller names the option in messages (``"--device"`` on the command line, ``"device"`` in the
        Python API).

    Returns
    -------
    torch.device

    Raises
    ------
    OptionError
        For an unknown name, ``cuda`` on a machine without a usable CUDA device, or ``cuda:N`` with N out of
        range.
    """
    text = str(name).strip().lower()
    if text == "cpu":
        return torch.device("cpu")
    if text == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    kind, sep, index = text.partition(":")
    if kind != "cuda" or (sep and not index.isdigit()):
        raise OptionError(f"{option} {name}: unknown device; choose one of {', '.join(DEVICE_CHOICES)} or cuda:N")
    if not torch.cuda.is_available():
        raise OptionError(f"{option} {name}: no CUDA device is available (torch.cuda.is_available() is False; "
                          f"{_build()}); use {option} cpu")
    if not sep:
        return torch.device("cuda")
    count = torch.cuda.device_count()
    if int(index) >= count:
        raise OptionError(f"{option} {name}: no such CUDA device; this machine has {count} "
                          f"(cuda:0{f' to cuda:{count - 1}' if count > 1 else ''})")
    return torch.device("cuda", int(index))


@contextmanager
def detector_on(detector: Any, device: str | torch.device) -> Iterator[Any]:
    """Let ``detector`` compute on ``device`` inside the block, where it can; its own setting comes back after.

    A detector that can run on a device has a ``device`` attribute (not a hyperparameter: it is neither saved
    with the model nor part of its hash); any other one keeps computing on the CPU, which gives the same
    results, only on other hardware.

    Parameters
    ----------
    detector : Detector
    device : str or torch.device
        An already resolved device (:func:`resolve_device`).
    """
    if not hasattr(detector, "device"):
        yield detector
        return
    before = detector.device
    detector.device = str(device)
    try:
        yield detector
    finally:
        detector.device = before
