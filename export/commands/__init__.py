"""The ``fcnx export`` and ``fcnx parity`` subcommands (see runtime/cli.py)."""
