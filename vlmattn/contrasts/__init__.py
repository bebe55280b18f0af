"""Paired contrasts between two conditions (A and B) of the same scenes, per (layer, head)."""
