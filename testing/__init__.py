"""What the tests and the benchmarks share: servers, a control plane, fixtures' readers.

Neither `tests` nor `benchmarks` is imported from here (an import-linter contract), so either can
use it without the other.
"""
