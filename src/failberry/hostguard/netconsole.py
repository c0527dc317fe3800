"""Optional: point the kernel's netconsole at the log host, so the kernel's own last words (the
hung-task report, the panic) reach the same place as our alert. Configured through configfs
(/sys/kernel/config/netconsole/TARGET), with the module-parameter line printed for persistence.

netconsole sends raw UDP from the kernel: it needs the local interface and address and the
MAC of the next hop, which we take from `ip -j route get` and `ip -j neigh`."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from failberry.errors import FailberryError

LOG = logging.getLogger(__name__)

CONFIGFS = Path("sys/kernel/config/netconsole")
TARGET = "failberry"
LOCAL_PORT = 6665  # netconsole's default source port


class NetconsoleError(FailberryError):
    """netconsole could not be planned or configured; says which step and why."""


@dataclass(frozen=True)
class NetconsolePlan:
    """Everything netconsole needs for one target."""

    dev_name: str
    local_ip: str
    remote_ip: str
    remote_port: int
    remote_mac: str

    def attributes(self) -> dict[str, str]:
        """configfs attribute -> value (written before `enabled`)."""
        return {"dev_name": self.dev_name, "local_port": str(LOCAL_PORT),
                "local_ip": self.local_ip, "remote_ip": self.remote_ip,
                "remote_port": str(self.remote_port), "remote_mac": self.remote_mac}

    def module_parameter(self) -> str:
        """The same target as a `netconsole=` module/kernel parameter."""
        return (f"netconsole={LOCAL_PORT}@{self.local_ip}/{self.dev_name},"
                f"{self.remote_port}@{self.remote_ip}/{self.remote_mac}")


def plan(remote_ip: str, port: int, route: dict[str, Any],
         neighbours: list[dict[str, Any]]) -> NetconsolePlan:
    """Combine `ip -j route get REMOTE` (one entry) and `ip -j neigh` into a target."""
    dev = route.get("dev")
    src = route.get("prefsrc")
    if not dev or not src:
        raise NetconsoleError(f"no route with a source address to {remote_ip}")
    hop = route.get("gateway") or remote_ip
    for n in neighbours:
        if n.get("dst") == hop and n.get("dev") == dev and n.get("lladdr"):
            return NetconsolePlan(dev, src, remote_ip, port, str(n["lladdr"]))
    raise NetconsoleError(f"no MAC address known for next hop {hop} on {dev}; "
                          f"send it a packet (ping {hop}) and run install again")


def _ip_json(*args: str) -> Any:
    proc = subprocess.run(["ip", "-j", *args], capture_output=True, text=True, timeout=10)
    if proc.returncode != 0:
        raise NetconsoleError(f"`ip -j {' '.join(args)}` failed: {proc.stderr.strip()}")
    return json.loads(proc.stdout or "[]")


def discover(target: str) -> NetconsolePlan:
    """Resolve HOST:PORT and find the route and the next hop's MAC on this host."""
    host, _, port = target.rpartition(":")
    host = host.strip("[]")
    try:
        remote = socket.getaddrinfo(host, int(port), type=socket.SOCK_DGRAM)[0][4][0]
    except (OSError, ValueError) as e:
        raise NetconsoleError(f"hostguard.netconsole {target!r} does not resolve: {e}") from None
    routes = _ip_json("route", "get", str(remote))
    if not routes:
        raise NetconsoleError(f"no route to {remote}")
    return plan(str(remote), int(port), routes[0], _ip_json("neigh", "show"))


def apply(p: NetconsolePlan, configfs: Path, *, dry_run: bool = False) -> list[str]:
    """Create or update our configfs target; returns what was (or would be) done."""
    target = configfs / TARGET
    done = []
    if not configfs.is_dir():
        raise NetconsoleError(f"{configfs} is missing: load the module (`modprobe netconsole`) "
                              "with configfs mounted at /sys/kernel/config")
    enabled = target / "enabled"
    current = {k: _read(target / k) for k in p.attributes()}
    if current == p.attributes() and _read(enabled) == "1":
        return []
    done.append(f"configure netconsole target {target} -> {p.remote_ip}:{p.remote_port}")
    if dry_run:
        return done
    target.mkdir(exist_ok=True)
    if _read(enabled) == "1":
        enabled.write_text("0")  # attributes can only change while disabled
    for key, value in p.attributes().items():
        (target / key).write_text(value)
    enabled.write_text("1")
    LOG.info("netconsole target %s enabled: %s", target, p.module_parameter())
    return done


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="ascii").strip()
    except OSError:
        return ""


def setup(target: str, root: Path, *, dry_run: bool, live: bool) -> None:
    """For `install`: configure netconsole live (or in ROOT's configfs tree), print the
    persistent form."""
    p = discover(target)
    configfs = root / CONFIGFS
    if live and not configfs.is_dir() and not dry_run:
        subprocess.run(["modprobe", "netconsole"], capture_output=True, timeout=30)
    if live or configfs.is_dir():
        for line in apply(p, configfs, dry_run=dry_run):
            print(f"{'would ' if dry_run else ''}{line}")
    print(f"note: to keep netconsole across reboots, put `options netconsole "
          f"{p.module_parameter()}` in /etc/modprobe.d/netconsole.conf and `netconsole` in "
          "/etc/modules-load.d/netconsole.conf")
