"""What ships with scatterbird: sample recordings, the synthetic-data generator, manifests, default model."""

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent
SAMPLES_DIR = DATA_DIR / "samples"
