"""`python -m failberry.net`: see `failberry.net.commands.main`."""

import sys

from failberry.net.commands import main

sys.exit(main())
