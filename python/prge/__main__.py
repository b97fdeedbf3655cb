"""`python -m prge ...` is the `prge` command (also where no console script is on PATH)."""
from prge.cli import entry

entry()
