"""Stream any recording block by block: decode, mix to mono, resample, check.

A recording is never loaded whole: soundfile (libsndfile) decodes it block by block, the channels are
averaged to mono, and soxr's streaming resampler brings each block to the pipeline rate, keeping its state
between blocks. Memory is bounded by the block size, whatever the file's length.

Every failure raises :class:`AudioError`, which names the file and the reason. What is usable but suspect
(a truncated MP3 or Ogg file, damaged MP3 frames the decoder skipped, a sample rate too low for birdsong)
is kept as a warning on the stream (:attr:`AudioStream.warnings`) and the audio is used.

libmpg123 (libsndfile's MP3 decoder) prints its complaints straight to file descriptor 2 from C. Around
each call that may decode MP3, descriptor 2 points at a temporary file instead (:class:`_DecoderOutput`),
and what the decoder said goes into the error's reason or the stream's warning, never onto the terminal.
"""

from __future__ import annotations

import os
import re
import struct
import sys
import tempfile
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import soundfile as sf
import soxr

from scatterbird.errors import AudioError

#: File extensions the batch tools look for by default (libsndfile decodes all of them).
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".au", ".w64", ".rf64")

#: Recordings shorter than this are rejected: nothing meaningful can be said about them.
MIN_DURATION_S = 0.01

DEFAULT_BLOCK_SECONDS = 2.0

#: Below this source rate (twice a sensible top of the bird band, 8 kHz) a recording gets a warning,
#: unless the pipeline itself runs at that rate or lower (then the recording loses nothing it would use).
LOW_RATE_HZ = 16000

#: A decoded length this many source samples short of the header's is a truncated file (a few MP3 frames
#: of slack: encoder delay and padding are not always accounted for in the header).
SHORT_DECODE_SLACK = 4 * 1152

#: The largest Ogg page: 27-byte header, up to 255 segment sizes, up to 255 * 255 body bytes.
_OGG_PAGE_MAX = 27 + 255 + 255 * 255


@dataclass(frozen=True)
class AudioInfo:
    """What the file says about itself (before resampling)."""

    path: str
    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str
    warnings: tuple[str, ...] = ()

    @property
    def duration(self) -> float:
        """Duration in seconds at the source rate."""
        return self.frames / float(self.sample_rate)


# fd 2 is one per process: one redirection at a time, and never a fork half-way through one (the child
# would inherit descriptor 2 pointing at the temporary file).
_FD2_LOCK = threading.Lock()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_FD2_LOCK.acquire, after_in_parent=_FD2_LOCK.release, after_in_child=_FD2_LOCK.release
    )

# "[src/libmpg123/layer3.c:INT123_do_layer3():1804] error: ", "Note: ", "Warning: " in front of a message
_DECODER_PREFIX = re.compile(r"^\s*(?:\[[^\]]*\]\s*)?(?:(?:note|warning|error)\s*:\s*)?", re.IGNORECASE)
_CONTROL = re.compile(r"\x1b\[[0-9;]*[A-Za-z]|[\x00-\x1f\x7f]")
# What libmpg123 says when it meets damaged data and skips it. It also complains about some frames of
# sound files when they are read in blocks ("part2_3_length ... too large"), with nothing lost: not damage.
_DAMAGE = re.compile(r"illegal audio-mpeg-header|resync|skipped \d+ bytes", re.IGNORECASE)
#: Lines kept per redirection (what comes first says what went wrong).
_MAX_LINES = 100


class _DecoderOutput:
    """Keeps what C decoders write to file descriptor 2 off the terminal, and keeps it for the messages.

    ``with out:`` points descriptor 2 at a private temporary file for the duration of the block and always
    points it back, also on an exception; the lines written meanwhile are added to :attr:`lines`. A
    module-wide lock makes the redirections of several threads take turns, so each restores the right
    descriptor; hold it only around decoder calls (a thread that writes to stderr meanwhile, rare, has its
    text taken for the decoder's). Where there is no descriptor 2, or no temporary file can be made, the
    block runs unredirected.
    """

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._sink: Any = None
        self._saved: int | None = None

    def __enter__(self) -> "_DecoderOutput":
        _FD2_LOCK.acquire()
        try:
            if self._sink is None:
                self._sink = tempfile.TemporaryFile(buffering=0)
            if sys.stderr is not None:
                sys.stderr.flush()  # Python's own pending text belongs on the terminal, not in the sink
            self._saved = os.dup(2)
            os.dup2(self._sink.fileno(), 2)
        except (OSError, ValueError, AttributeError):
            if self._saved is not None:
                os.close(self._saved)
                self._saved = None
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            if self._saved is not None:
                os.dup2(self._saved, 2)
                os.close(self._saved)
        finally:
            restored, self._saved = self._saved, None
            _FD2_LOCK.release()
        if restored is not None:
            try:
                self._drain()
            except OSError:  # what the decoder said is lost; the descriptor is restored all the same
                pass

    def _drain(self) -> None:
        fd = self._sink.fileno()
        size = os.lseek(fd, 0, os.SEEK_END)
        if size:
            os.lseek(fd, 0, os.SEEK_SET)
            data = os.read(fd, min(size, 1 << 16))  # a damaged hour of MP3 can say a lot; the start will do
            os.lseek(fd, 0, os.SEEK_SET)
            os.ftruncate(fd, 0)
            text = data.decode("utf-8", "replace")
            lines = [line for line in (_CONTROL.sub("", x).strip() for x in text.splitlines()) if line]
            self.lines += lines[: max(0, _MAX_LINES - len(self.lines))]

    def summary(self, limit: int = 2) -> str:
        """The first ``limit`` distinct messages, news of damaged data first, without the decoder's source
        locations; "" if none."""
        cleaned = (_DECODER_PREFIX.sub("", x).strip().rstrip(".") for x in self.lines)
        said = list(dict.fromkeys(m for m in cleaned if m))
        said.sort(key=lambda m: _DAMAGE.search(m) is None)  # stable: otherwise in the decoder's order
        out = "; ".join(m if len(m) <= 120 else m[:117] + "..." for m in said[:limit])
        if len(said) > limit:
            out += f" (+{len(said) - limit} more)"
        return out

    def close(self) -> None:
        if self._sink is not None:
            self._sink.close()
            self._sink = None


def _said(out: _DecoderOutput) -> str:
    """`` (decoder: ...)`` when the decoder printed something, else ""."""
    text = out.summary()
    return f" (decoder: {text})" if text else ""


def _open(path: str | os.PathLike, out: _DecoderOutput | None = None) -> sf.SoundFile:
    """Open with soundfile, turning every failure into an AudioError with a reason.

    The decoder's stderr output goes to ``out`` (a private one when None) and into the reason on failure.
    """
    p = Path(path)
    if not p.exists():
        raise AudioError(path, "file not found")
    if p.is_dir():
        raise AudioError(path, "is a directory, not an audio file")
    if not os.access(p, os.R_OK):
        raise AudioError(path, "permission denied (file is not readable)")
    if p.stat().st_size == 0:
        raise AudioError(path, "empty file (0 bytes)")
    own = out is None
    out = _DecoderOutput() if out is None else out
    try:
        with out:
            return sf.SoundFile(str(p))
    except sf.LibsndfileError as exc:  # libsndfile's own words, e.g. "Format not recognised."
        text = str(exc.error_string if hasattr(exc, "error_string") else exc).strip().rstrip(".")
        low = text.lower()
        if "not recognised" in low or "unknown format" in low:
            raise AudioError(path, f"unsupported or unrecognised audio format ({text})") from None
        if "not a regular file" in low:
            # The file exists and is regular (checked above): libsndfile says this when its last resort,
            # the MP3 decoder, finds no valid frame header.
            what = ("MP3 header invalid (corrupt or not MP3)" if p.suffix.lower() in (".mp3", ".mp2", ".mpga")
                    else "no audio format recognised (corrupt, or not audio)")
            raise AudioError(path, f"not a readable audio file: {what}{_said(out)}") from None
        cut = _ogg_truncation(p) if _starts_with(p, b"OggS") else None
        if cut:  # an Ogg file cut inside its header pages
            raise AudioError(path, f"truncated file: {cut}, before any audio ({text})") from None
        raise AudioError(path, f"unreadable audio ({text}){_said(out)}") from None
    except (RuntimeError, OSError, TypeError, ValueError) as exc:
        raise AudioError(path, f"unreadable audio ({exc}){_said(out)}") from None
    finally:
        if own:
            out.close()


def _starts_with(path: Path, magic: bytes) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(magic)) == magic
    except OSError:
        return False


def _wav_truncation(path: str | os.PathLike) -> str | None:
    """For a RIFF/WAVE file, compare the data size its header declares with the bytes present.

    libsndfile quietly reads what is there from a truncated WAV; a cut-off recording should be reported.
    Returns a reason when the file is truncated, else None. Sizes of 0 or 0xFFFFFFFF (written by recorders
    that stream and never finalise the header) are accepted as "unknown".
    """
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


def _ogg_truncation(path: str | os.PathLike) -> str | None:
    """For an Ogg file, whether it was cut short: its last page must end the file and carry the
    end-of-stream flag.

    libsndfile takes an Ogg file's length from its last complete page, so a cut file looks like a shorter
    one; this looks at the pages themselves. Returns the reason when truncated, else None.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        f.seek(max(0, size - _OGG_PAGE_MAX - 4))
        tail = f.read()
    pos = tail.rfind(b"OggS")
    while pos >= 0:
        head = tail[pos:pos + 27]
        if len(head) == 27 and head[4] == 0:
            nseg = head[26]
            table = tail[pos + 27:pos + 27 + nseg]
            if len(table) == nseg and pos + 27 + nseg + sum(table) == len(tail):
                # a whole page ends exactly at the end of the file: it is the last page
                if head[5] & 0x04:
                    return None
                return "the Ogg stream stops without its end-of-stream page"
        pos = tail.rfind(b"OggS", 0, pos)
    return "the file ends part-way through an Ogg page"


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Read a recording's header.

    Parameters
    ----------
    path : str or Path
        Any file libsndfile reads (WAV, FLAC, OGG/Vorbis, MP3, AIFF, ...).

    Returns
    -------
    AudioInfo
        With ``warnings`` for a usable but truncated Ogg file.

    Raises
    ------
    AudioError
        If the file is missing, unreadable, of an unknown format, truncated (WAV), or holds no samples.
    """
    with _open(path) as f:
        info = AudioInfo(str(path), int(f.samplerate), int(f.channels), int(f.frames), f.format, f.subtype)
    if info.format in ("WAV", "WAVEX"):
        reason = _wav_truncation(path)
        if reason:
            raise AudioError(path, reason)
    if info.format == "OGG":
        reason = _ogg_truncation(path)
        if reason and info.frames <= 0:
            raise AudioError(path, f"truncated file: {reason}, and no complete audio page is left")
        if reason:
            note = f"truncated file: {reason}; only the {info.duration:.2f} s present are used"
            info = replace(info, warnings=(note,))
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
    warnings : list of str
        What is suspect about the recording although it was used: a source rate below ``LOW_RATE_HZ`` (and
        below ``sr``), a truncated Ogg file (known on opening), and, once the stream is exhausted, a decoded
        length short of the header's (a truncated MP3) or damaged MP3 data the decoder reported.

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
        self.warnings: list[str] = list(self.info.warnings)
        rate = self.info.sample_rate
        if rate < LOW_RATE_HZ and rate < self.sr:
            self.warnings.append(
                f"sample rate {rate} Hz: nothing above {rate / 2000:g} kHz is recorded; much birdsong lies above it"
            )
        self._used = False

    @property
    def warning(self) -> str | None:
        """The warnings as one line (``"; "`` between them), or None."""
        return "; ".join(self.warnings) or None

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
        rate = self.info.sample_rate
        mp3 = self.info.format == "MP3"  # only libmpg123 prints: other formats read without redirection
        out = _DecoderOutput()
        damage: list[str] = []  # the decoder's news of damaged data it skipped
        try:
            with _open(self.path, out) as f:
                out.lines.clear()  # what it said while opening a file it then opened is no news
                while True:
                    try:
                        if mp3:
                            with out:
                                block = f.read(self.block_frames, dtype="float32", always_2d=True)
                            damage += [x for x in out.lines if _DAMAGE.search(x)][: _MAX_LINES - len(damage)]
                            out.lines.clear()
                        else:
                            block = f.read(self.block_frames, dtype="float32", always_2d=True)
                    except (sf.LibsndfileError, RuntimeError) as exc:
                        what = "MP3 data corrupt" if mp3 else str(exc)
                        raise AudioError(
                            self.path, f"decoding failed at {read / rate:.3f} s: {what}{_said(out)}"
                        ) from None
                    if block.shape[0] == 0:
                        break
                    mono = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
                    finite = np.isfinite(mono)
                    if not finite.all():
                        first = read + int(np.argmin(finite))
                        kind = "NaN" if np.isnan(mono[first - read]) else "infinite"
                        raise AudioError(self.path, f"{kind} sample at {first / rate:.6f} s (sample {first})")
                    read += block.shape[0]
                    chunk = resampler.resample_chunk(mono) if resampler is not None else mono
                    if chunk.size:
                        self.samples_out += chunk.size
                        yield np.ascontiguousarray(chunk, dtype=np.float32)
                if read == 0:
                    raise AudioError(self.path, "zero samples could be decoded")
                if read < MIN_DURATION_S * rate:
                    raise AudioError(self.path, f"too short: only {read} sample(s) could be decoded")
                if read < self.info.frames - SHORT_DECODE_SLACK:
                    self.warnings.append(
                        f"truncated file? {read / rate:.2f} s decoded of the {self.info.duration:.2f} s its "
                        "header declares; only the decoded audio is used"
                    )
                if damage:
                    out.lines = damage
                    self.warnings.append(f"damaged MP3 data: the decoder skipped some{_said(out)}")
                if resampler is not None:
                    tail = resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
                    if tail.size:
                        self.samples_out += tail.size
                        yield np.ascontiguousarray(tail, dtype=np.float32)
        finally:
            out.close()


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


def read_span(path: str | os.PathLike, start_s: float, end_s: float) -> tuple[np.ndarray, int]:
    """Samples ``[start_s, end_s)`` of a recording at its own rate (e.g. a clip of an event), with the MP3
    decoder's stderr kept off the terminal as everywhere in this module.

    Returns
    -------
    samples : ndarray, float32, shape (n, channels)
        Empty (n = 0) when the span starts at or after the end of the decoded audio.
    sample_rate : int

    Raises
    ------
    AudioError
        If the file cannot be opened, or decoding fails.
    """
    out = _DecoderOutput()
    try:
        with _open(path, out) as f:
            sr = int(f.samplerate)
            first = max(0, int(np.floor(start_s * sr)))
            n = max(0, int(np.ceil(end_s * sr)) - first)
            try:
                with out:
                    f.seek(min(first, f.frames))
                    data = f.read(n, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError) as exc:
                what = "MP3 data corrupt" if f.format == "MP3" else str(exc)
                raise AudioError(path, f"decoding failed near {start_s:.3f} s: {what}{_said(out)}") from None
    finally:
        out.close()
    return data, sr


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
