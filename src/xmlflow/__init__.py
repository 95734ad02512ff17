"""xmlflow: real-time XML processing pipelines."""
