"""The scale-out test runs with `make scaleout` (and in CI), not in `make test`: it starts eight processes
and takes one to two minutes (see `ON_DEMAND` in tests/conftest.py)."""
