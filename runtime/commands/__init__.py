"""The runtime's own subcommands: predict and info (no training libraries needed)."""
