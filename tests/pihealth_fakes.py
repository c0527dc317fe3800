"""Stand-ins at the Pi health part's hardware seams: a /sys tree, a kernel log file in
/dev/kmsg's format, /proc/mounts, and a clock the test moves."""

from __future__ import annotations

from pathlib import Path

WALL0 = 1_800_000_000.0


class FakeClock:
    """Monotonic seconds since "boot" set by the test; wall time moves with it."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return WALL0 + self.now


class PiTree:
    """A fake Pi: sysfs under `root/sys`, a kernel log `root/kmsg`, mounts `root/mounts`."""

    def __init__(self, root: Path) -> None:
        self.sys = root / "sys"
        self.sys.mkdir(parents=True, exist_ok=True)
        self.kmsg = root / "kmsg"
        self.kmsg.write_text("")
        self.mounts = root / "mounts"
        self.seq = 0

    def hwmon(self, alarm: int | None = 0, index: int = 1) -> Path:
        """The rpi_volt device of raspberrypi-hwmon, beside an unrelated hwmon0."""
        other = self.sys / "class" / "hwmon" / "hwmon0"
        other.mkdir(parents=True, exist_ok=True)
        (other / "name").write_text("cpu_thermal\n")
        dev = self.sys / "class" / "hwmon" / f"hwmon{index}"
        dev.mkdir(parents=True, exist_ok=True)
        (dev / "name").write_text("rpi_volt\n")
        if alarm is not None:
            self.alarm(alarm, index)
        return dev

    def alarm(self, value: int, index: int = 1) -> None:
        (self.sys / "class" / "hwmon" / f"hwmon{index}" / "in1_lcrit_alarm").write_text(
            f"{value}\n")

    def zone(self, n: int, millidegrees: int | str, kind: str = "cpu-thermal") -> None:
        z = self.sys / "class" / "thermal" / f"thermal_zone{n}"
        z.mkdir(parents=True, exist_ok=True)
        (z / "type").write_text(kind + "\n")
        (z / "temp").write_text(f"{millidegrees}\n")

    def throttled(self, value: int) -> None:
        p = self.sys / "devices" / "platform" / "soc" / "soc:firmware" / "get_throttled"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(f"{value:x}\n")

    def log(self, at: float, text: str, prio: int = 6) -> None:
        """Append one record as /dev/kmsg shows it (with a continuation line now and then)."""
        self.seq += 1
        line = f"{prio},{self.seq},{int(at * 1e6)},-;{text}\n"
        if self.seq % 2:
            line += " SUBSYSTEM=platform\n DEVICE=+platform:raspberrypi-hwmon\n"
        with self.kmsg.open("a") as f:
            f.write(line)

    def root(self, options: str = "rw,noatime", device: str = "/dev/mmcblk0p2") -> None:
        self.mounts.write_text(
            "sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0\n"
            f"{device} / ext4 {options},commit=60 0 0\n"
            "/dev/mmcblk0p1 /boot/firmware vfat rw,relatime 0 0\n")
