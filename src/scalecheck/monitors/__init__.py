"""Stage 2's instruments: streaming, mergeable statistics kept on the model's device.

- ``_kernels``: pure statistics kernels (moments, Gram matrix, exact merges);
- ``inputs``: per-feature input statistics and conditioning;
- ``activations``: every nonlinearity call, via a TorchFunctionMode;
- ``nonlinearities``: the table of nonlinearities and their exact saturation thresholds;
- ``gradients``: per-parameter gradient statistics;
- ``loss``: the loss used and the constant-predictor baseline.
"""
