"""Small examples used by the README: a function and a stateful module."""

from __future__ import annotations


def score(a: float, b: float = 1.0) -> float:
    """A stand-in for real work: prints on the worker (visible with ``stream_logs=True``) and returns a value."""
    print(f"scoring {a} with weight {b}")
    return a * b + 1


class Counter:
    """A stateful object: one instance lives on one worker, and its state survives between calls."""

    def __init__(self, start: int = 0) -> None:
        self.value = start

    def increment(self, by: int = 1) -> int:
        self.value += by
        return self.value
