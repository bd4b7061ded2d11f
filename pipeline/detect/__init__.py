"""Batch detection: windows of scattergrams scored by a detector, the results store, exports."""
