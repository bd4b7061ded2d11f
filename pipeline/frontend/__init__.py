"""The streaming front end: audio in, wavelet scattering, thresholding, scattergrams out."""
