"""The kernel's hung-task settings: a sysctl.d drop-in, the live values in /proc/sys, the
previous live values kept for `uninstall`, and a comparison for `check`.

Everything works against a root directory: `/` on a server, a temporary tree in tests. The live
values are written through `ProcSys`, which only ever points at the real /proc/sys when the
command runs without `--root` (see `live_procsys`); with `--root DIR` it is `DIR/proc/sys`, and
only when that is a plain directory tree (never a mounted procfs). So no test can write the
host's kernel settings by construction.
"""

from __future__ import annotations

import errno
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from failberry import procsys
from failberry.config import HostguardConfig
from failberry.errors import FailberryError
from failberry.fileio import write_atomic
from failberry.procsys import SysctlError

LOG = logging.getLogger(__name__)

DROPIN = Path("etc/sysctl.d/90-failberry-hostguard.conf")
STATE = Path("var/lib/failberry/hostguard-previous.json")
MARKER = "# Written by `failberry hostguard install`; `failberry hostguard uninstall` removes it."

# The order they are applied in: the reboot delay and the timeout before the panic switch, so
# that the kernel never panics with a half-applied configuration.
KEYS = ("kernel.panic", "kernel.hung_task_timeout_secs", "kernel.hung_task_panic")

# Where sysctl.d files live, lowest precedence first (sysctl.d(5): /etc, /run, /usr/local/lib,
# /usr/lib, /lib, highest first); a file name in a later directory masks the same name in an
# earlier one, and the files apply in lexical order of their names across all directories, so
# that a later one wins. procps' `sysctl --system` reads /etc/sysctl.conf after all of them.
SYSCTL_DIRS = ("lib/sysctl.d", "usr/lib/sysctl.d", "usr/local/lib/sysctl.d", "run/sysctl.d",
               "etc/sysctl.d")
LEGACY_CONF = Path("etc/sysctl.conf")


class ForeignFileError(FailberryError):
    """A file at our path that we did not write; we never overwrite or remove it."""


def wanted(cfg: HostguardConfig) -> dict[str, str]:
    """The values the config asks for, as the strings /proc/sys shows."""
    return {
        "kernel.panic": str(cfg.panic),
        "kernel.hung_task_timeout_secs": str(cfg.hung_task_timeout),
        "kernel.hung_task_panic": str(cfg.hung_task_panic),
    }


def render_dropin(values: dict[str, str]) -> str:
    """The drop-in file's text."""
    lines = [MARKER,
             "# A hung task (uninterruptible for hung_task_timeout_secs) panics the kernel, which",
             "# reboots kernel.panic seconds later. hung_task_panic above 1 (newer kernels): panic",
             "# when that many tasks hang in one scan.",
             ""]
    lines += [f"{key} = {values[key]}" for key in KEYS]
    return "\n".join(lines) + "\n"


class ProcSys(procsys.ProcSys):
    """The shared adapter, with a hint for the hung-task keys the kernel refuses. Its root
    has no default: the caller names the real /proc/sys on purpose (`live_procsys`)."""

    def __init__(self, base: Path) -> None:
        super().__init__(base)

    def hint(self, key: str, value: str, err: int | None) -> str:
        """Why this kernel refused a hung-task setting."""
        if err == errno.EINVAL and key == "kernel.hung_task_panic" and value not in ("0", "1"):
            return " (this kernel accepts only 0 or 1; a count needs a newer kernel)"
        if err == errno.ENOENT:
            return " (the kernel lacks it: is CONFIG_DETECT_HUNG_TASK off?)"
        return ""


def _is_mounted_procfs(path: Path) -> bool:
    """Whether a path is (inside) a mounted procfs: never a place for a test tree."""
    try:
        real = os.stat("/proc/sys")
        here = os.stat(path)
    except OSError:
        return False
    return here.st_dev == real.st_dev or os.path.ismount(path.parent)


def live_procsys(root: Path | None) -> ProcSys | None:
    """Where live values go: /proc/sys without --root; DIR/proc/sys with --root DIR only when
    that is a plain directory tree (a test's fake procfs); otherwise None (files only)."""
    if root is None:
        return ProcSys(Path("/proc/sys"))
    base = root / "proc" / "sys"
    if not base.is_dir() or _is_mounted_procfs(base):
        return None
    return ProcSys(base)


@dataclass(frozen=True)
class Row:
    """One line of `check`: a setting, what we want, what runs, what boots, and the verdict."""

    key: str
    wanted: str
    running: str  # "-" when there is no live kernel to ask
    persisted: str  # the value the sysctl.d files give at boot, "-" if none
    note: str
    # A file applied after our drop-in that sets another value: it wins at boot, and `install`
    # (which touches only its own file) cannot fix that.
    override: Path | None = None
    override_value: str = ""

    @property
    def ok(self) -> bool:
        """Whether this row matches."""
        return not self.note

    @property
    def install_fixes(self) -> bool:
        """Whether `install` would bring this row in line (not an override, not a kernel that
        lacks the setting)."""
        notes = [n for n in self.note.split("; ") if n]
        return any(n in ("running value differs", "drop-in differs") or n.endswith(" missing")
                   for n in notes)


def boot_files(root: Path) -> list[Path]:
    """The sysctl files in the order they apply at boot (the last setting of a key wins)."""
    by_name: dict[str, Path] = {}
    for d in SYSCTL_DIRS:
        directory = root / d
        if directory.is_dir():
            for f in directory.glob("*.conf"):
                by_name[f.name] = f  # later directories mask earlier ones
    files = [by_name[n] for n in sorted(by_name)]
    # Debian links /etc/sysctl.conf as /etc/sysctl.d/99-sysctl.conf; then it is already here.
    legacy = root / LEGACY_CONF
    if legacy.is_file() and not any(f.resolve() == legacy.resolve() for f in files):
        files.append(legacy)
    return files


def boot_settings(root: Path) -> dict[str, list[tuple[str, Path]]]:
    """Every setting of every key at boot, in the order applied: key -> [(value, file)]."""
    out: dict[str, list[tuple[str, Path]]] = {}
    for f in boot_files(root):
        try:
            text = f.read_text(encoding="utf-8", errors="replace")
        except OSError as e:
            LOG.warning("cannot read %s: %s", f, e.strerror)
            continue
        for key, value in parse_sysctl_conf(text):
            out.setdefault(key, []).append((value, f))
    return out


def persisted_values(root: Path) -> dict[str, tuple[str, Path]]:
    """What the sysctl files set at boot: key -> (value, file), the last file winning."""
    return {key: settings[-1] for key, settings in boot_settings(root).items()}


def overrides(root: Path, want: dict[str, str]) -> dict[str, tuple[str, Path]]:
    """Keys that a file applied after our drop-in sets to another value than `want` (even
    once the drop-in is installed): key -> (value, file)."""
    legacy = root / LEGACY_CONF
    out = {}
    for key, settings in boot_settings(root).items():
        # Names sort across directories; /etc/sysctl.conf comes last whatever its name.
        later = [(v, f) for v, f in settings if f == legacy or f.name > DROPIN.name]
        if key in want and later and later[-1][0] != want[key]:
            out[key] = later[-1]
    return out


def parse_sysctl_conf(text: str) -> Iterable[tuple[str, str]]:
    """`key = value` lines of a sysctl.d file (`#`/`;` comments, `-` prefix, `/` separators)."""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;" or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip().lstrip("-").replace("/", ".")
        yield key, " ".join(value.split())


def compare(cfg: HostguardConfig, root: Path, proc: ProcSys | None) -> list[Row]:
    """The `check` table, one row per setting."""
    want = wanted(cfg)
    boot = persisted_values(root)
    later = overrides(root, want)
    own = root / DROPIN
    ours = dict(parse_sysctl_conf(own.read_text(encoding="utf-8", errors="replace"))
                ) if own.is_file() else {}
    rows = []
    for key in KEYS:
        running = proc.read(key) if proc is not None else None
        value, _ = boot.get(key, ("-", own))
        notes = []
        if proc is not None and running is None:
            notes.append("kernel lacks it")
        elif running is not None and running != want[key]:
            notes.append("running value differs")
        if not own.is_file():
            notes.append(f"{own} missing")
        elif ours.get(key) != want[key]:
            notes.append("drop-in differs")
        override, override_value = None, ""
        if key in later:
            override_value, override = later[key]
            notes.append(f"overridden by {override}")
        rows.append(Row(key, want[key], running if running is not None else "-", value,
                        "; ".join(notes), override, override_value))
    return rows


def advice(rows: list[Row], root: Path) -> list[str]:
    """What to do about the drift in `rows`: name each overriding file, and say whether
    `install` fixes the rest."""
    out = []
    for r in rows:
        if r.override is not None:
            where = str(r.override)
            if r.override.is_symlink():
                where += f" (a link to {r.override.resolve()})"
            out.append(f"{where} sets {r.key} = {r.override_value}, and sysctl applies it "
                       f"after {root / DROPIN} (files apply in the order of their names, the "
                       f"last one wins): change or remove that line there; `failberry "
                       f"hostguard install` does not touch other files")
    drift = [r for r in rows if not r.ok]
    fixable = [r for r in drift if r.install_fixes]
    full = [r.key for r in fixable if r.override is None]
    until_boot = [r.key for r in fixable if r.override is not None]
    parts = []
    if full:
        parts.append("fixes " + ("it" if len(full) == len(drift) else ", ".join(full)))
    if until_boot:
        parts.append(f"sets {', '.join(until_boot)} only until the next boot")
    if parts:
        out.append("`failberry hostguard install` " + "; it ".join(parts))
    return out


def format_table(rows: list[Row]) -> str:
    """Rows as an aligned text table."""
    head = ("setting", "wanted", "running", "at boot", "status")
    body = [(r.key, r.wanted, r.running, r.persisted, "ok" if r.ok else f"DRIFT: {r.note}")
            for r in rows]
    widths = [max(len(line[i]) for line in (head, *body)) for i in range(4)]
    out = []
    for line in (head, *body):
        out.append("  ".join(c.ljust(w) for c, w in zip(line[:4], widths, strict=True))
                   + "  " + line[4])
    return "\n".join(out)


@dataclass(frozen=True)
class Change:
    """One thing install or uninstall did (or would do, in a dry run)."""

    what: str


def _own_file(path: Path) -> bool:
    try:
        return path.read_text(encoding="utf-8").startswith(MARKER)
    except FileNotFoundError:
        return False
    except (OSError, UnicodeDecodeError):
        return False


def install(cfg: HostguardConfig, root: Path, proc: ProcSys | None, *,
            dry_run: bool = False) -> list[Change]:
    """Record the previous live values (once), apply the wanted ones live, write the drop-in.
    Running it again changes nothing."""
    want = wanted(cfg)
    dropin, state = root / DROPIN, root / STATE
    if dropin.exists() and not _own_file(dropin):
        raise ForeignFileError(f"{dropin} exists and was not written by failberry; "
                               "move it away or merge it by hand")
    changes: list[Change] = []
    if proc is not None:
        current = {key: proc.read(key) for key in KEYS}
        missing = [k for k, v in current.items() if v is None]
        if missing:
            raise SysctlError(f"the kernel lacks {', '.join(missing)} under {proc.base} "
                              "(is CONFIG_DETECT_HUNG_TASK off?)")
        if not state.exists():
            changes.append(Change(f"record previous values in {state}"))
            if not dry_run:
                write_atomic(state, json.dumps(current, indent=1, sort_keys=True) + "\n",
                              0o600)
        applied: list[tuple[str, str]] = []
        for key in KEYS:
            old = current[key]
            if old == want[key]:
                continue
            changes.append(Change(f"set {key}: {old} -> {want[key]} (live)"))
            if dry_run:
                continue
            try:
                proc.write(key, want[key])
            except SysctlError:
                # Leave the kernel as we found it: undo what this run already set.
                for done_key, done_old in reversed(applied):
                    proc.write(done_key, done_old)
                raise
            applied.append((key, old or ""))
            LOG.info("set %s = %s (was %s)", key, want[key], old)
    elif cfg.hung_task_panic > 1:
        LOG.warning("kernel.hung_task_panic = %d is a count, which only newer kernels accept; "
                    "an older kernel ignores the line at boot", cfg.hung_task_panic)
    text = render_dropin(want)
    if not (dropin.is_file() and dropin.read_text(encoding="utf-8") == text):
        changes.append(Change(f"write {dropin}"))
        if not dry_run:
            write_atomic(dropin, text)
            LOG.info("wrote %s", dropin)
    return changes


def uninstall(root: Path, proc: ProcSys | None, *, dry_run: bool = False) -> list[Change]:
    """Restore the recorded previous values and remove only our own files."""
    dropin, state = root / DROPIN, root / STATE
    changes: list[Change] = []
    previous: dict[str, str] = {}
    if state.is_file():
        try:
            raw = json.loads(state.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise SysctlError(f"cannot read the recorded values in {state}: {e}") from None
        if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
            raise SysctlError(f"{state} is not what `install` writes; restore the values by hand")
        previous = {k: v for k, v in raw.items() if k in KEYS}
    if proc is not None:
        # Restore in reverse order: switch the panic off before touching its timings.
        for key in reversed(KEYS):
            if key not in previous:
                continue
            now = proc.read(key)
            if now == previous[key]:
                continue
            changes.append(Change(f"restore {key}: {now} -> {previous[key]} (live)"))
            if not dry_run:
                proc.write(key, previous[key])
                LOG.info("restored %s = %s (was %s)", key, previous[key], now)
    if dropin.exists():
        if not _own_file(dropin):
            raise ForeignFileError(f"{dropin} was not written by failberry; leaving it alone")
        changes.append(Change(f"remove {dropin}"))
        if not dry_run:
            dropin.unlink()
            LOG.info("removed %s", dropin)
    if state.exists() and (proc is not None or not previous):
        changes.append(Change(f"remove {state}"))
        if not dry_run:
            state.unlink()
    return changes
