"""`python -m prge ...` is the `prge` command (also where no console script is on PATH)."""
import sys

from prge.cli import main

sys.exit(main())
