"""Training detectors on labelled (and unlabelled) audio folders."""
