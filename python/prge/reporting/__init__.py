"""Results -> tables and figures: collect finished runs, aggregate seeds, write
Markdown/CSV tables and matplotlib figures. `prge report` is the entry point."""
from prge.reporting.collect import collect, method_of  # noqa: F401
from prge.reporting.tables import accuracy_rows, speed_rows, write_report  # noqa: F401
