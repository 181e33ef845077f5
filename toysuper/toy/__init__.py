"""Toy models of superposition (Elhage et al. 2022) with an instances axis."""
