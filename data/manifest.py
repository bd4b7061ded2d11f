"""The Bird Audio Detection / DCASE 2018 Task 3 datasets as their users have them on disk.

Nothing is downloaded at run time: this manifest only says what each published dataset holds, how its
archive unpacks and which label file comes with it, so that :mod:`pipeline.datasets` can find the files
under a folder and say what is missing.

Every dataset is a folder of 10 s, 44.1 kHz mono ``<itemid>.wav`` clips and a CSV ``itemid,datasetid,hasbird``
(``hasbird`` is 1 when *any* bird is audible). The evaluation sets were published with their labels held
back; their CSV (the challenge's example submission) lists the item ids only.

Sources
-------
Counts of the development sets (7,690 / 8,000 / 20,000) and of the evaluation sets (2,000 / 6,620 /
4,000, 12,620 in all) are those of the DCASE 2018 Task 3 page. The positive counts are the numbers the
challenge organisers reported for the 2018 label files (25.2 %, 75.6 %, 50.1 %); they are used only to
print a warning, never to reject data. Values marked ``uncertain`` below (the evaluation sets' archive and
label-file names, and their ``datasetid`` spellings) were written from memory of the challenge pages and
are matched loosely: any CSV in the folder with an ``itemid`` column is accepted.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from scatterbird.data.synthetic import write_dataset


@dataclass(frozen=True)
class ChallengeDataset:
    """One published dataset.

    Attributes
    ----------
    name : str
        The canonical name, used in reports (``ff1010bird``, ``warblrb10k``, ...).
    role : str
        ``"development"`` (labels public) or ``"evaluation"`` (labels held back).
    n_items : int
        Clips in the published release.
    n_positive : int or None
        Clips labelled ``hasbird = 1`` (None where the labels are hidden).
    label_files : tuple of str
        Label-file names as published, most likely first.
    archives : tuple of str
        Archive names as published (for the README and for messages only).
    datasetids : tuple of str
        Spellings of the ``datasetid`` column seen in the label file.
    aliases : tuple of str
        Other names a user may type (case-insensitive).
    audio_subdir : str
        Folder of the clips inside the unpacked archive.
    url : str
        Where the audio is published.
    labels_url : str
        Where the label file is published.
    uncertain : str
        What in this entry is not verified against the published files (empty when all is).
    """

    name: str
    role: str
    n_items: int
    n_positive: int | None
    label_files: tuple[str, ...]
    archives: tuple[str, ...]
    datasetids: tuple[str, ...]
    aliases: tuple[str, ...] = ()
    audio_subdir: str = "wav"
    sample_rate: int = 44100
    duration_s: float = 10.0
    url: str = ""
    labels_url: str = ""
    uncertain: str = ""
    notes: str = ""

    @property
    def labels_public(self) -> bool:
        return self.role == "development"

    @property
    def positive_rate(self) -> float | None:
        return None if self.n_positive is None else self.n_positive / self.n_items

    def names(self) -> tuple[str, ...]:
        """Every spelling that refers to this dataset, lower-cased."""
        return tuple(s.lower() for s in (self.name, *self.aliases, *self.datasetids))


DCASE2018_PAGE = "http://dcase.community/challenge2018/task-bird-audio-detection"

DATASETS: tuple[ChallengeDataset, ...] = (
    ChallengeDataset(
        name="ff1010bird",
        role="development",
        n_items=7690,
        n_positive=1935,
        label_files=("ff1010bird_metadata_2018.csv", "ff1010bird_metadata.csv", "ff1010bird.csv"),
        archives=("ff1010bird_wav.zip",),
        datasetids=("ff1010bird",),
        aliases=("freefield1010", "ff1010", "freefield"),
        url="https://archive.org/details/ff1010bird",
        labels_url="https://doi.org/10.6084/m9.figshare.3851466 (2018 label files: see " + DCASE2018_PAGE + ")",
        notes="Freesound field recordings from around the world; ~25 % positive.",
    ),
    ChallengeDataset(
        name="warblrb10k",
        role="development",
        n_items=8000,
        n_positive=6045,
        label_files=("warblrb10k_public_metadata_2018.csv", "warblrb10k_public_metadata.csv", "warblrb10k.csv"),
        archives=("warblrb10k_public_wav.zip",),
        datasetids=("warblrb10k", "warblrb10k_public"),
        aliases=("warblr", "warblrb", "warblr10k", "warblrb10k_public"),
        url="https://archive.org/details/warblrb10k_public",
        labels_url="https://doi.org/10.6084/m9.figshare.3851466 (2018 label files: see " + DCASE2018_PAGE + ")",
        notes="Smartphone recordings from the UK (Warblr app), with much human noise; ~76 % positive.",
    ),
    ChallengeDataset(
        name="BirdVox-DCASE-20k",
        role="development",
        n_items=20000,
        n_positive=10017,
        label_files=("BirdVoxDCASE20k_csvpublic.csv", "BirdVox-DCASE-20k.csv"),
        archives=("BirdVox-DCASE-20k.zip",),
        datasetids=("BirdVox-DCASE-20k",),
        aliases=("birdvox", "birdvox20k", "birdvox-dcase20k", "birdvoxdcase20k"),
        url="https://doi.org/10.5281/zenodo.1208080",
        labels_url="https://doi.org/10.5281/zenodo.1208080",
        uncertain="n_positive (reported as about half; 10,017 from memory)",
        notes="Night flight calls from autonomous recording units in Ithaca, NY; ~50 % positive.",
    ),
    ChallengeDataset(
        name="warblrb10k_test",
        role="evaluation",
        n_items=2000,
        n_positive=None,
        label_files=("warblrb10k_test_metadata.csv", "dcase2018_task3_bird_examplesubmission.csv"),
        archives=("warblrb10k_test_wav.zip",),
        datasetids=("warblrb10k_test", "warblrb10k-eval", "warblrb10k"),
        aliases=("warblr_test", "warblrb10k-test", "warblrb10k-eval"),
        url="https://archive.org/details/birdaudiodetectionchallenge_test",
        labels_url=DCASE2018_PAGE,
        uncertain="archive and label-file names, datasetid spelling",
        notes="The held-out part of Warblr; labels hidden.",
    ),
    ChallengeDataset(
        name="Chernobyl",
        role="evaluation",
        n_items=6620,
        n_positive=None,
        label_files=("Chernobyl_metadata.csv", "chernobyl.csv", "dcase2018_task3_bird_examplesubmission.csv"),
        archives=("Chernobyl_wav.zip",),
        datasetids=("Chernobyl", "chern"),
        aliases=("chernobyl", "chern"),
        url="https://archive.org/details/birdaudiodetectionchallenge_test",
        labels_url=DCASE2018_PAGE,
        uncertain="archive and label-file names, datasetid spelling",
        notes="Unattended recorders in the Chernobyl Exclusion Zone; labels hidden.",
    ),
    ChallengeDataset(
        name="PolandNFC",
        role="evaluation",
        n_items=4000,
        n_positive=None,
        label_files=("PolandNFC_metadata.csv", "polandnfc.csv", "dcase2018_task3_bird_examplesubmission.csv"),
        archives=("PolandNFC_wav.zip",),
        datasetids=("PolandNFC", "polandnfc"),
        aliases=("polandnfc", "poland", "poland-nfc"),
        url=DCASE2018_PAGE,
        labels_url=DCASE2018_PAGE,
        uncertain="archive and label-file names, datasetid spelling",
        notes="Night flight calls recorded in Poland; labels hidden.",
    ),
)

#: All names and aliases, lower-cased, to their dataset.
_BY_NAME: dict[str, ChallengeDataset] = {}
for _d in DATASETS:
    for _n in _d.names():
        _BY_NAME.setdefault(_n, _d)


def lookup(name: str) -> ChallengeDataset | None:
    """The published dataset called ``name`` (any alias, any case), or None for a user's own dataset.

    Examples
    --------
    >>> lookup("freefield1010").name
    'ff1010bird'
    >>> lookup("my-meadow") is None
    True
    """
    return _BY_NAME.get(name.strip().lower())


def development_sets() -> tuple[ChallengeDataset, ...]:
    """The three development sets of DCASE 2018 Task 3 (the leave-one-dataset-out protocol's folds)."""
    return tuple(d for d in DATASETS if d.role == "development")


def all_label_file_names() -> tuple[str, ...]:
    """Every published label-file name, for recognising a layout."""
    seen: dict[str, None] = {}
    for d in DATASETS:
        for f in d.label_files:
            seen.setdefault(f, None)
    return tuple(seen)


#: How the synthetic stand-ins of the three development sets differ (positive rate, SNR range in dB,
#: backgrounds), after the real sets: ff1010bird is mostly birdless field recordings of every kind,
#: warblrb10k mostly birds over smartphone handling and traffic-like noise, BirdVox faint night calls.
SYNTHETIC_CHALLENGE = {
    "ff1010bird": dict(positive_rate=0.25, snr_db=(-2.0, 12.0), backgrounds=("pink", "rain", "wind")),
    "warblrb10k": dict(positive_rate=0.75, snr_db=(2.0, 15.0), backgrounds=("white", "brown")),
    "BirdVox-DCASE-20k": dict(positive_rate=0.5, snr_db=(-6.0, 6.0), backgrounds=("brown", "pink", "wind")),
}


def write_challenge_like(
    root,
    n_clips: int = 12,
    *,
    duration: float = 10.0,
    sr: int = 44100,
    seed: int = 0,
) -> dict[str, "object"]:
    """Write synthetic stand-ins of the three development sets in their published layouts.

    ``ROOT/<name>/wav/<itemid>.wav`` and ``ROOT/<name>/<published label file>`` with the published
    ``datasetid``, different positive rates, SNRs and backgrounds per set (``SYNTHETIC_CHALLENGE``). Each set
    has both classes (the seed is advanced until it does), so even a handful of clips can be scored.

    Parameters
    ----------
    root : path
        Parent folder (created).
    n_clips : int
        Clips per set (at least 2).
    duration, sr : float, int
        Clip length in seconds and sample rate (the real sets: 10 s at 44.1 kHz).
    seed : int

    Returns
    -------
    dict
        Dataset name -> its folder (a ``pathlib.Path``).
    """
    if n_clips < 2:
        raise ValueError(f"n_clips must be >= 2 (both classes), got {n_clips}")
    out: dict[str, object] = {}
    for k, d in enumerate(development_sets()):
        opts = SYNTHETIC_CHALLENGE[d.name]
        folder = Path(root) / d.name
        for attempt in range(100):
            labels = write_dataset(
                folder, n_clips, datasetid=d.datasetids[0], duration=duration, sr=sr,
                seed=seed * 1000 + k * 100 + attempt, labels_name=d.label_files[0], **opts,
            )
            with open(labels, newline="") as f:
                ys = {row["hasbird"] for row in csv.DictReader(f)}
            if ys == {"0", "1"}:
                break
        out[d.name] = folder
    return out
