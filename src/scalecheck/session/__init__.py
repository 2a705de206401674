"""Stage 2: running the model over the batches with the monitors attached, borrowing it."""
