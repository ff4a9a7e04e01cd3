"""`python -m d2lcnn ...`: the command line (see d2lcnn.cli)."""

import sys

from d2lcnn.cli import main

sys.exit(main())
