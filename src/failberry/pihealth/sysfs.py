"""What the Pi's kernel exposes in sysfs and procfs, read under a replaceable root.

Every reader answers None (or an empty result) when its file is missing or unreadable: QEMU
and other boards lack most of these, and that is not an error."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

LOG = logging.getLogger(__name__)

# drivers/hwmon/raspberrypi-hwmon.c registers as "rpi_volt"; in1_lcrit_alarm is 1 while the
# firmware's sticky under-voltage bit was set at the driver's last poll (every 2 s).
RPI_VOLT = "rpi_volt"
# The Raspberry Pi kernels' firmware driver (not Debian's) adds get_throttled: `vcgencmd
# get_throttled`'s bits in hex.
GET_THROTTLED = "devices/platform/soc/soc:firmware/get_throttled"
THROTTLE_BITS = {"under_voltage": 0, "freq_capped": 1, "throttled": 2, "soft_temp_limit": 3}
OCCURRED_SHIFT = 16  # bits 16-19: the same conditions, sticky since boot


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:  # absent, or a driver that answers EINVAL/ENODATA (a disabled zone)
        return None


class Sysfs:
    """The files under `root` (default `/sys`), found once and read on every poll."""

    def __init__(self, root: Path = Path("/sys")) -> None:
        self.root = root
        self._alarm: Path | None = None

    def undervoltage_alarm_path(self) -> Path | None:
        """`in1_lcrit_alarm` of the rpi_volt hwmon device, or None. Looked up until found: the
        driver is a module that may load after we start."""
        if self._alarm is None or not self._alarm.exists():
            self._alarm = None
            for hwmon in sorted((self.root / "class" / "hwmon").glob("hwmon*")):
                if _read(hwmon / "name") != RPI_VOLT:
                    continue
                # Older kernels put the attributes under device/.
                for cand in (hwmon / "in1_lcrit_alarm", hwmon / "device" / "in1_lcrit_alarm"):
                    if cand.exists():
                        self._alarm = cand
                        break
                if self._alarm is not None:
                    LOG.debug("under-voltage alarm at %s", self._alarm)
                    break
        return self._alarm

    def undervoltage_alarm(self) -> bool | None:
        """Whether the firmware reports under-voltage now; None without the driver."""
        path = self.undervoltage_alarm_path()
        text = None if path is None else _read(path)
        if text is None:
            return None
        return text not in ("", "0")

    def throttled(self) -> dict[str, bool] | None:
        """get_throttled decoded (now and `*_occurred` since boot); None without it."""
        text = _read(self.root / GET_THROTTLED)
        if text is None:
            return None
        try:
            value = int(text, 16)
        except ValueError:
            return None
        out = {name: bool(value >> bit & 1) for name, bit in THROTTLE_BITS.items()}
        out |= {f"{name}_occurred": bool(value >> (bit + OCCURRED_SHIFT) & 1)
                for name, bit in THROTTLE_BITS.items()}
        return out

    def temperatures(self) -> dict[str, float]:
        """Thermal zone name (its `type`) -> degrees Celsius, for each zone that answers."""
        out: dict[str, float] = {}
        zones = (self.root / "class" / "thermal").glob("thermal_zone*")
        for zone in sorted(zones, key=lambda p: (len(p.name), p.name)):
            raw = _read(zone / "temp")
            if raw is None:
                continue
            try:
                milli = int(raw)
            except ValueError:
                continue
            name = _read(zone / "type") or zone.name
            if name in out:
                name = f"{name}-{zone.name.removeprefix('thermal_zone')}"
            out[name] = milli / 1000.0
        return out


@dataclass(frozen=True)
class Mount:
    """One line of /proc/mounts."""

    device: str
    point: str
    fstype: str
    options: tuple[str, ...]


def root_mount(mounts: Path = Path("/proc/mounts")) -> Mount | None:
    """The file system mounted on `/` (the last such line wins: it is the one on top)."""
    text = _read(mounts)
    if text is None:
        return None
    found: Mount | None = None
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[1] == "/" and fields[2] != "rootfs":
            found = Mount(fields[0], fields[1], fields[2], tuple(fields[3].split(",")))
    return found


def root_readonly(mounts: Path = Path("/proc/mounts")) -> bool | None:
    """Whether `/` is mounted read-only; None when /proc/mounts says nothing about it."""
    m = root_mount(mounts)
    return None if m is None else "ro" in m.options
