"""scatterbird's audio-to-features pipeline: streaming audio, wavelet scattering, thresholding."""

__version__ = "0.1.0"
