"""Mutation runners that mutmut's own `run` cannot serve (see docs/mutation-testing.md)."""
