"""Spectrum embeddings: a wavelength-aware transformer on native-grid patches, its training and evaluation."""
