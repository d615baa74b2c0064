"""A user project: a small CNN on 8x8 digit images, trained by ctloop through the public contract."""
