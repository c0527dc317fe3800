"""failberry.net.rtnl: pyroute2's IPRoute without the package's eager start, each case in a
fresh interpreter (the import is once per process)."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, sys
{before}
from failberry.net.rtnl import IPRoute, NetlinkError
out = {{"ndb": "pyroute2.ndb.main" in sys.modules, "modules": len(sys.modules)}}
with IPRoute() as ipr:  # a read of this namespace's links, through the lean import
    out["lo"] = any(link.get_attr("IFLA_IFNAME") == "lo" for link in ipr.get_links())
try:
    ipr = IPRoute()
    ipr.link("get", index=2**31 - 1)  # no such link: the kernel's error, as NetlinkError
except NetlinkError as e:
    out["error"] = e.code
finally:
    ipr.close()
{after}
print(json.dumps(out))
"""


def _probe(before: str = "", after: str = "") -> dict[str, object]:
    code = PROBE.format(before=before, after=after)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    result: dict[str, object] = json.loads(res.stdout)
    return result


def test_iproute_works_without_loading_the_rest_of_pyroute2() -> None:
    lean = _probe()
    assert lean["lo"] is True and lean["error"] == 19  # ENODEV
    assert lean["ndb"] is False  # NDB (and sqlite3, IPDB, the CLI...) never loaded
    whole = _probe(before="import pyroute2")
    assert whole["ndb"] is True and whole["error"] == 19
    assert isinstance(lean["modules"], int) and isinstance(whole["modules"], int)
    assert whole["modules"] - lean["modules"] > 100, (lean, whole)


def test_the_rest_of_pyroute2_still_imports_when_asked_for() -> None:
    out = _probe(after="""
import pyroute2
from pyroute2 import NDB, IPRoute as Again
out["same"] = Again is IPRoute
out["ndb_loaded"] = NDB.__module__ == "pyroute2.ndb.main"
try:
    from pyroute2 import NoSuchThing
except ImportError:
    out["missing"] = "ImportError"
""")
    assert out["same"] is True and out["ndb_loaded"] is True
    assert out["missing"] == "ImportError"
