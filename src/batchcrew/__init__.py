"""batchcrew."""
