"""Machinery behind the estimators: module building, parameter stacks, training, parallelism."""
