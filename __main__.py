"""``python -m scatterbird``: the command line."""

import sys

from scatterbird.cli import main

sys.exit(main())
