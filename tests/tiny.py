"""The tiny ``sknet_digits`` configuration that keeps the tests of whole runs fast."""

TINY = {"cardinality": 2, "base_width": 4, "base_out": 16, "stem_channels": 8,
        "branches": [[3, 1, 2], [3, 2, 2]], "min_dim": 4}
"""Two groups of width 4, 16 output channels, an SK unit with two 3x3 branches (dilation 1, 2)."""
