"""python-iptables, imported with its libraries' places given.

Left to itself, `import iptc` runs `ldconfig -N -v` to find libxtables' extension directory
and `ldconfig -p` (through ctypes.util.find_library) for each library: about a second more of
a Pi's start under QEMU. Debian puts them in one directory, which is looked up here and
handed over through the variables python-iptables reads; anything not found is left to it.
"""

from __future__ import annotations

import glob
import os
import re


def library_env(roots: tuple[str, ...] = ("/usr/lib", "/lib")) -> dict[str, str]:
    """XTABLES_LIBDIR, PYTHON_IPTABLES_XTABLES_VERSION and IPTABLES_LIBDIR for the first
    `<root>/<multiarch>/libxtables.so.N` beside its `xtables` directory; {} if none."""
    for root in roots:
        for lib in sorted(glob.glob(f"{root}/*/libxtables.so.*") + glob.glob(
                f"{root}/libxtables.so.*")):
            version = re.fullmatch(r"libxtables\.so\.(\d+)", os.path.basename(lib))
            libdir = os.path.dirname(lib)
            if version and os.path.isdir(f"{libdir}/xtables"):
                return {"XTABLES_LIBDIR": f"{libdir}/xtables",
                        "PYTHON_IPTABLES_XTABLES_VERSION": version.group(1),
                        "IPTABLES_LIBDIR": libdir}
    return {}


# What the environment already says wins (an admin's own IPTABLES_LIBDIR, for one).
for _key, _value in library_env().items():
    os.environ.setdefault(_key, _value)

import iptc  # noqa: E402  (after the variables it reads at import)
import iptc.easy  # noqa: E402

__all__ = ["iptc", "library_env"]
