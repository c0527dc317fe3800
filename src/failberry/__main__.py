"""`python -m failberry` runs the command line."""

import sys

from failberry.cli import main

sys.exit(main())
