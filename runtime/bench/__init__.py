"""``fcnx bench``: models x backends x batch sizes timed side by side in one run, with
the machine's measured matmul ceiling and a report (JSON, CSV, Markdown, plots)."""
