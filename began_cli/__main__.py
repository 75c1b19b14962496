"""`python -m began ...`, the same as the `began` command."""

import sys

from .app import main

sys.exit(main())
