"""The NVMe I/O timeout. On EC2 Nitro (EBS volumes are NVMe devices) a timed-out I/O becomes an
error the file system may swallow or answer by remounting read-only, so the host limps on
instead of hanging visibly; AWS recommends the largest `nvme_core.io_timeout`, which turns the
stall into a hang our watcher and the kernel's hung-task detector can see. It is a module
parameter fixed at boot: we explain the kernel command line, we never edit the boot loader."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PARAM = Path("sys/module/nvme_core/parameters/io_timeout")
# The parameter is an unsigned int on kernels since 4.15; older ones cap it at 255 seconds.
RECOMMENDED = 4294967295
OLD_KERNEL_MAX = 255


@dataclass(frozen=True)
class NvmeAdvice:
    """What runs, and what to do about it (empty `advice` when nothing)."""

    running: int
    on_cmdline: str | None
    advice: str


def _cmdline_value(cmdline: str) -> str | None:
    for word in cmdline.split():
        if word.startswith("nvme_core.io_timeout="):
            return word.partition("=")[2]
    return None


def check(root: Path) -> NvmeAdvice | None:
    """None on hosts without the nvme_core module; otherwise the running value and advice."""
    try:
        running = int((root / PARAM).read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None
    try:
        cmdline = (root / "proc/cmdline").read_text(encoding="utf-8", errors="replace")
    except OSError:
        cmdline = ""
    on_cmdline = _cmdline_value(cmdline)
    if running >= RECOMMENDED:
        return NvmeAdvice(running, on_cmdline, "")
    advice = (
        f"nvme_core.io_timeout is {running}s: a stalled NVMe/EBS volume turns into I/O errors "
        "(and perhaps a read-only remount) instead of a hang. AWS recommends the maximum on "
        f"Nitro instances: add `nvme_core.io_timeout={RECOMMENDED}` to the kernel command line "
        "(Debian/Ubuntu: GRUB_CMDLINE_LINUX_DEFAULT in /etc/default/grub, then `update-grub`; "
        "RHEL/Amazon Linux: `grubby --update-kernel=ALL --args=nvme_core.io_timeout="
        f"{RECOMMENDED}`) and reboot. Kernels older than 4.15 accept at most "
        f"{OLD_KERNEL_MAX}.")
    if on_cmdline is not None:
        advice += (f" The command line already has nvme_core.io_timeout={on_cmdline}, but the "
                   "running value differs: is nvme_core built with another value or loaded "
                   "from the initramfs with its own options?")
    return NvmeAdvice(running, on_cmdline, advice)
