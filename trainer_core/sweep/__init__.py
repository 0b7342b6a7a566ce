"""Strength sweeps: planning the cells, the per-row MODELs, the labelled grid and video, and the numbers."""
