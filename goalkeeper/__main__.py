"""`python -m goalkeeper` is the `goalkeeper` command."""

import sys

from goalkeeper.cli import main

sys.exit(main())
