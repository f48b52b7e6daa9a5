"""Compiled inference engines, kept apart from the descriptors that use them."""
