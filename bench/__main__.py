"""Entry point of ``python -m bench``."""

import sys

from bench.cli import main

try:
    sys.exit(main())
except KeyboardInterrupt:
    # Servers and databases are already cleaned up by the time this is reached.
    sys.exit("bench: interrupted")
