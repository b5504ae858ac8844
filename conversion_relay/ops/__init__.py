"""Operator actions: dead-letter operations, erasure, status and the configuration check."""
