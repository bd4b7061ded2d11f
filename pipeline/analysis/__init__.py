"""Spline-theory analyses of trained networks on audio, with an HTML page."""
