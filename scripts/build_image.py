#!/usr/bin/env python3
"""Build an SD-card image from a checkout without installing failberry: the same code as
`failberry build` (same arguments), e.g. `sudo python3 scripts/build_image.py -c my.toml`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from failberry.cli import main  # after the path is set

if __name__ == "__main__":
    sys.exit(main(["build", *sys.argv[1:]]))
