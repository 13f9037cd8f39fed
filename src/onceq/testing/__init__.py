"""Testing helpers for apps built on onceq."""
