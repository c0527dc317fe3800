"""pyroute2's IPRoute and NetlinkError, without the rest of pyroute2.

`import pyroute2` (0.7.2, what bookworm ships) loads every one of its 63 entry points as it
starts: NDB with sqlite3, IPDB, the CLI, unittest.mock, multiprocessing and more, 3.5 s of a
quiet QEMU guest and about 150 modules (their memory kept for the process's life) that
failberry never uses. IPRoute and NetlinkError live in submodules, and importing a submodule
needs the package's module object, not its `__init__` run. So the package is registered
without running its `__init__`, and it runs that in full, once, the first time anyone asks it
for a name it lacks: `from pyroute2 import NDB` elsewhere in the process still works.

With pyroute2 already imported, or when the submodules do not import on their own (another
layout in a later release), the plain `import pyroute2` is used.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import types
from typing import Any

LOG = logging.getLogger(__name__)

PACKAGE = "pyroute2"


def _forget_package() -> None:
    for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
        del sys.modules[name]


def _register_unrun() -> types.ModuleType | None:
    """The package's module, in sys.modules with its `__init__` not run; None when the
    package is imported already or cannot be found."""
    if PACKAGE in sys.modules:
        return None
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        return None
    package = importlib.util.module_from_spec(spec)
    loader = spec.loader
    ran = False

    def __getattr__(name: str) -> Any:
        nonlocal ran
        # `from pyroute2 import config` asks for the attribute before importing the
        # submodule: a submodule's name must not run the whole package.
        if ran or name.startswith("__") or importlib.util.find_spec(f"{PACKAGE}.{name}"):
            raise AttributeError(f"module {PACKAGE!r} has no attribute {name!r}")
        ran = True
        loader.exec_module(package)  # the package's own __init__, in this module object
        return getattr(package, name)

    setattr(package, "__getattr__", __getattr__)  # noqa: B010 (a module's hook)
    sys.modules[PACKAGE] = package
    return package


def _load() -> tuple[Any, Any]:
    package = _register_unrun()
    if package is not None:
        try:
            from pyroute2.iproute import IPRoute as ipr
            from pyroute2.netlink.exceptions import NetlinkError as error
        except ImportError as e:
            LOG.debug("pyroute2's submodules do not import alone (%s); importing it whole", e)
            _forget_package()
        else:
            return ipr, error
    from pyroute2 import IPRoute as ipr
    from pyroute2.netlink.exceptions import NetlinkError as error

    return ipr, error


IPRoute, NetlinkError = _load()

__all__ = ["IPRoute", "NetlinkError"]
