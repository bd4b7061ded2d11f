"""Training detectors on labelled (and unlabeled) audio folders."""
