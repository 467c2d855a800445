"""`python -m worker …` is the same as the `trex` command."""

import sys

from .entry import main

sys.exit(main())
