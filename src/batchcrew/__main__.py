"""`python -m batchcrew`: the same command line as the `batchcrew` script."""

import sys

from batchcrew.cli import main

sys.exit(main())
