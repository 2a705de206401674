"""Reference cases shipped with scalecheck: real failures, reproduced faithfully.

- :mod:`scalecheck.reference.interpolation`: the "can a neural network learn simple
  interpolation?" network that learned nothing on raw inputs in [255, 200000].
"""
