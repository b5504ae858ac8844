"""Delivery: the scheduler that starts drains, the drain that reads a partition, and the engine
that sends a chunk and records its outcome."""
