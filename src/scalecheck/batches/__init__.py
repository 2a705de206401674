"""Stage 1: loader batches -> model inputs and targets (see ``_adapter``)."""
