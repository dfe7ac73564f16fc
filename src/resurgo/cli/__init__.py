"""The command line: one module per command, all dispatched from main."""
