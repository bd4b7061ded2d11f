"""Evaluation on labelled challenge-style data: ROC AUC, cross-validation, HTML report."""
