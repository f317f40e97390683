"""`python -m goalkeeper` is the `goalkeeper` command."""

from goalkeeper.cli import entry

entry()
