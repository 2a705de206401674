"""The calibration corpus: known-answer cases for ``scalecheck.diagnose``'s verdict.

- :mod:`.cases`: the cases, each a builder returning a model, a loader, a loss and the
  expected verdict, with the reason for the label;
- :mod:`.verified`: the training numbers that justify each label (generated);
- :mod:`.verify`: the script that trains every case on raw and rescaled inputs and
  regenerates :mod:`.verified` (slow, not part of the test suite);
- :mod:`.table`: runs ``diagnose`` on every case, scores it and renders
  ``docs/calibration.md`` (used by ``tests/test_calibration.py``).
"""
