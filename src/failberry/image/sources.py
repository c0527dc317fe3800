"""What the build puts into an image, found from the failberry package itself, so a build from
an installed wheel works like one from a checkout: the package (copied into the image's
python3 path), the recipe (package lists, mmdebstrap hooks, fstab) and the root file system
overlay, both shipped as package data under `failberry/data/`, and the README."""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]
# Package data the build reads but the image's own copy of failberry does not need.
BUILD_ONLY = ("data/image", "data/rootfs-overlay")


@dataclass(frozen=True)
class Sources:
    """The failberry package directory a build copies from (this one unless a test says)."""

    package: Path = PACKAGE

    @property
    def recipe(self) -> Path:
        """Package lists, mmdebstrap hooks, fstab and firmware defaults."""
        return self.package / "data" / "image"

    @property
    def overlay(self) -> Path:
        """Files copied verbatim onto the image's root file system."""
        return self.package / "data" / "rootfs-overlay"

    def readme(self) -> bytes | None:
        """The README: a checkout's own README.md (it may be newer than the installed
        metadata), else the long description the installed distribution carries."""
        checkout = self.package.parent.parent
        if self.package.parent.name == "src" and (checkout / "pyproject.toml").is_file():
            readme = checkout / "README.md"
            return readme.read_bytes() if readme.is_file() else None
        try:
            dist = importlib.metadata.distribution("failberry")
        except importlib.metadata.PackageNotFoundError:
            return None
        text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
        description = text.partition("\n\n")[2]
        return description.encode("utf-8") if description.strip() else None


# This installed package: where a build takes everything from.
INSTALLED = Sources()
