"""The command line: the click application, one module per command group, and the rich output."""
