"""Stream any recording block by block: decode, mix to mono, resample, check.

A recording is never loaded whole: soundfile (libsndfile) decodes it block by block, the channels are
averaged to mono, and soxr's streaming resampler brings each block to the pipeline rate, keeping its state
between blocks. Memory is bounded by the block size, whatever the file's length.

Every failure raises :class:`AudioError`, which names the file and the reason.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf
import soxr

from scatterbird.errors import AudioError

#: File extensions the batch tools look for by default (libsndfile decodes all of them).
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".au", ".w64", ".rf64")

#: Recordings shorter than this are rejected: nothing meaningful can be said about them.
MIN_DURATION_S = 0.01

DEFAULT_BLOCK_SECONDS = 2.0


@dataclass(frozen=True)
class AudioInfo:
    """What the file says about itself (before resampling)."""

    path: str
    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str

    @property
    def duration(self) -> float:
        """Duration in seconds at the source rate."""
        return self.frames / float(self.sample_rate)


def _open(path: str | os.PathLike) -> sf.SoundFile:
    """Open with soundfile, turning every failure into an AudioError with a reason."""
    p = Path(path)
    if not p.exists():
        raise AudioError(path, "file not found")
    if p.is_dir():
        raise AudioError(path, "is a directory, not an audio file")
    if not os.access(p, os.R_OK):
        raise AudioError(path, "permission denied (file is not readable)")
    if p.stat().st_size == 0:
        raise AudioError(path, "empty file (0 bytes)")
    try:
        return sf.SoundFile(str(p))
    except sf.LibsndfileError as exc:  # libsndfile's own words, e.g. "Format not recognised."
        text = str(exc.error_string if hasattr(exc, "error_string") else exc)
        if "not recognised" in text.lower() or "unknown format" in text.lower():
            raise AudioError(path, f"unsupported or unrecognised audio format ({text.strip()})") from None
        raise AudioError(path, f"unreadable audio ({text.strip()})") from None
    except (RuntimeError, OSError, TypeError, ValueError) as exc:
        raise AudioError(path, f"unreadable audio ({exc})") from None


def _wav_truncation(path: str | os.PathLike) -> str | None:
    """For a RIFF/WAVE file, compare the data size its header declares with the bytes present.

    libsndfile quietly reads what is there from a truncated WAV; a cut-off recording should be reported.
    Returns a reason when the file is truncated, else None. Sizes of 0 or 0xFFFFFFFF (written by recorders
    that stream and never finalise the header) are accepted as "unknown".
    """
    import struct

    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            cid, csize = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"data":
                if csize in (0, 0xFFFFFFFF):
                    return None
                present = size - (pos + 8)
                if present < csize:
                    return f"truncated file: the header declares {csize} bytes of audio but only {present} are present"
                return None
            pos += 8 + csize + (csize & 1)
    return None


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Read a recording's header.

    Parameters
    ----------
    path : str or Path
        Any file libsndfile reads (WAV, FLAC, OGG/Vorbis, MP3, AIFF, ...).

    Returns
    -------
    AudioInfo

    Raises
    ------
    AudioError
        If the file is missing, unreadable, of an unknown format, or holds no samples.
    """
    with _open(path) as f:
        info = AudioInfo(str(path), int(f.samplerate), int(f.channels), int(f.frames), f.format, f.subtype)
    if info.format in ("WAV", "WAVEX"):
        reason = _wav_truncation(path)
        if reason:
            raise AudioError(path, reason)
    _check_info(info)
    return info


def _check_info(info: AudioInfo) -> None:
    if info.channels < 1:
        raise AudioError(info.path, "no audio channels")
    if info.sample_rate <= 0:
        raise AudioError(info.path, f"invalid sample rate {info.sample_rate}")
    if info.frames <= 0:
        raise AudioError(info.path, "zero samples (the file holds no audio)")
    if info.duration < MIN_DURATION_S:
        raise AudioError(
            info.path,
            f"too short: {info.frames} sample(s) = {info.duration:.4f} s; at least {MIN_DURATION_S} s is needed",
        )


class AudioStream:
    """An iterable of float32 mono blocks at the pipeline rate, with the file's metadata.

    Parameters
    ----------
    path : str or Path
        The recording.
    sr : int
        Output sample rate in Hz (the pipeline rate).
    block_seconds : float
        Decoding block length in seconds of source audio. Memory is proportional to it.
    quality : str
        soxr quality preset ("HQ" or "VHQ").

    Attributes
    ----------
    info : AudioInfo
        The source file's header.
    samples_out : int
        Samples yielded so far at the output rate.

    Notes
    -----
    Iterating raises :class:`AudioError` on a decoding error part-way, and on the first NaN or infinite
    sample (with its time in seconds). A stream can be iterated once.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        sr: int = 22050,
        *,
        block_seconds: float = DEFAULT_BLOCK_SECONDS,
        quality: str = "HQ",
    ) -> None:
        self.path = str(path)
        self.sr = int(sr)
        self.info = audio_info(path)
        self.block_frames = max(256, int(round(block_seconds * self.info.sample_rate)))
        self.quality = quality
        self.samples_out = 0
        self._used = False

    @property
    def expected_samples(self) -> int:
        """Output samples the file should give (from its header)."""
        return int(round(self.info.frames * self.sr / self.info.sample_rate))

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._used:
            raise RuntimeError("an AudioStream can be iterated only once")
        self._used = True
        return self._blocks()

    def _blocks(self) -> Iterator[np.ndarray]:
        resampler = None
        if self.info.sample_rate != self.sr:
            resampler = soxr.ResampleStream(
                self.info.sample_rate, self.sr, 1, dtype="float32", quality=self.quality
            )
        read = 0
        with _open(self.path) as f:
            while True:
                try:
                    block = f.read(self.block_frames, dtype="float32", always_2d=True)
                except (sf.LibsndfileError, RuntimeError) as exc:
                    raise AudioError(
                        self.path, f"decoding failed at {read / self.info.sample_rate:.3f} s ({exc})"
                    ) from None
                if block.shape[0] == 0:
                    break
                mono = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
                finite = np.isfinite(mono)
                if not finite.all():
                    first = read + int(np.argmin(finite))
                    kind = "NaN" if np.isnan(mono[first - read]) else "infinite"
                    raise AudioError(
                        self.path,
                        f"{kind} sample at {first / self.info.sample_rate:.6f} s (sample {first})",
                    )
                read += block.shape[0]
                out = resampler.resample_chunk(mono) if resampler is not None else mono
                if out.size:
                    self.samples_out += out.size
                    yield np.ascontiguousarray(out, dtype=np.float32)
            if read == 0:
                raise AudioError(self.path, "zero samples could be decoded")
            if read < MIN_DURATION_S * self.info.sample_rate:
                raise AudioError(self.path, f"too short: only {read} sample(s) could be decoded")
            if resampler is not None:
                tail = resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
                if tail.size:
                    self.samples_out += tail.size
                    yield np.ascontiguousarray(tail, dtype=np.float32)


def stream_audio(
    path: str | os.PathLike, sr: int = 22050, *, block_seconds: float = DEFAULT_BLOCK_SECONDS
) -> AudioStream:
    """Open a recording for streaming. See :class:`AudioStream`.

    Examples
    --------
    >>> stream = stream_audio("dawn.flac", sr=22050)   # doctest: +SKIP
    >>> for block in stream:                          # doctest: +SKIP
    ...     process(block)
    """
    return AudioStream(path, sr, block_seconds=block_seconds)


def load_audio(path: str | os.PathLike, sr: int = 22050) -> np.ndarray:
    """Read a whole (short) recording through the same stream; for tests and clips only.

    Returns
    -------
    ndarray, float32, shape (n_samples,)
    """
    blocks = list(stream_audio(path, sr))
    return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)


def mono_at_rate(samples: np.ndarray, sample_rate: int, sr: int) -> np.ndarray:
    """An in-memory recording as the pipeline reads a file: mixed to mono and resampled to ``sr``.

    Parameters
    ----------
    samples : ndarray, shape (n_samples,) or (n_samples, n_channels)
        The audio, channels last (as soundfile returns it).
    sample_rate : int
        Its rate in Hz.
    sr : int
        The pipeline rate in Hz.

    Returns
    -------
    ndarray, float32, shape (n_out,)

    Raises
    ------
    AudioError
        On an empty or non-finite array, a bad shape or rate, or fewer samples than the shortest usable file.
    """
    x = np.asarray(samples)
    if x.ndim not in (1, 2) or x.size == 0:
        raise AudioError("<array>", f"expected samples of shape (n,) or (n, channels), got {x.shape}")
    if not (isinstance(sample_rate, (int, np.integer)) and sample_rate > 0):
        raise AudioError("<array>", f"sample_rate must be a positive whole number of Hz, got {sample_rate!r}")
    mono = x.mean(axis=1, dtype=np.float32) if x.ndim == 2 else x.astype(np.float32, copy=False)
    if not np.isfinite(mono).all():
        raise AudioError("<array>", f"NaN or infinite sample at sample {int(np.argmin(np.isfinite(mono)))}")
    if mono.size < MIN_DURATION_S * sample_rate:
        raise AudioError("<array>", f"too short: {mono.size} sample(s)")
    if sample_rate == sr:
        return np.ascontiguousarray(mono)
    return np.ascontiguousarray(soxr.resample(mono, sample_rate, sr, quality="HQ"), dtype=np.float32)
