"""The command line. The only place that turns exceptions into messages and exit codes:
0 success, 1 runtime failure, 2 bad input."""

from __future__ import annotations

import argparse
import importlib
import logging
import math
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from failberry import __version__
from failberry.errors import ConfigError, FailberryError, UsageError

LOG = logging.getLogger(__name__)

BUG_REPORT = "failberry: this is a bug; please report it with the traceback above"


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of exiting, so errors are one line, exit 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def _seconds(text: str) -> float:
    """A positive, finite number of seconds (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return value


def _handler(module: str, func: str) -> Callable[[argparse.Namespace], int]:
    """Import the command's module only when it runs: hostguard must not load router libs."""

    def call(args: argparse.Namespace) -> int:
        mod = importlib.import_module(module)
        result: int = getattr(mod, func)(args)
        return result

    return call


def build_parser() -> argparse.ArgumentParser:
    """The whole command set (README.md, "Commands")."""
    p = _Parser(prog="failberry", description=__doc__)
    p.add_argument("--version", action="version", version=f"failberry {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    b = sub.add_parser("build", help="build a bootable SD-card image from a config")
    b.add_argument("-c", "--config", type=Path, default=Path("failberry.toml"))
    b.add_argument("-o", "--output", type=Path, default=Path("failberry.img"))
    b.add_argument("--base-image", type=Path, help="customise a Raspberry Pi OS image instead")
    b.add_argument("--cache-dir", type=Path, help="where the base root file system is cached")
    b.add_argument("--compress", action="store_true", help="also write OUT.xz and OUT.bmap")
    b.set_defaults(func=_handler("failberry.image.commands", "cmd_build"))

    f = sub.add_parser("flash", help="write an image to an SD card, verified")
    f.add_argument("image", type=Path)
    f.add_argument("device", type=Path)
    f.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    f.add_argument("--allow-large", action="store_true",
                   help="allow devices larger than a sane SD card (512 GiB)")
    f.set_defaults(func=_handler("failberry.image.commands", "cmd_flash"))

    t = sub.add_parser("boot-test", help="boot an image under QEMU and check it comes up")
    t.add_argument("image", type=Path)
    t.add_argument("--timeout", type=_seconds, default=300.0)
    t.add_argument("--machine", choices=["virt", "raspi2b", "raspi3b"], default="virt",
                   help="virt (either architecture), raspi2b (armhf), raspi3b (arm64)")
    t.add_argument("--ssh-key", type=Path, help="private key for the admin login")
    t.add_argument("--hang-kernel", type=_seconds, nargs="?", const=120.0, default=None,
                   metavar="SECONDS",
                   help="after the checks, panic the guest's kernel and require a watchdog "
                        "reset within SECONDS (default 120) of the panic")
    t.add_argument("--idle-window", type=float, default=60.0, metavar="SECONDS",
                   help="measure the idle guest's disk writes this long (0: skip)")
    t.add_argument("--exec", dest="execs", action="append", default=[], metavar="CMD",
                   help="run CMD in the guest over SSH after the checks and show its output "
                        "(repeatable; a non-zero exit fails the test)")
    t.add_argument("--console", type=Path, metavar="FILE",
                   help="write the guest's whole serial console to FILE")
    t.set_defaults(func=_handler("failberry.image.commands", "cmd_boot_test"))

    c = sub.add_parser("config", help="config tools")
    csub = c.add_subparsers(dest="config_command", metavar="ACTION", parser_class=_Parser)
    csub.required = True
    cc = csub.add_parser("check", help="validate a config and summarise it")
    cc.add_argument("-c", "--config", type=Path, default=Path("failberry.toml"))
    cc.set_defaults(func=cmd_config_check)

    r = sub.add_parser("run", help="run the supervisor (the failberryd service)")
    r.add_argument("-c", "--config", type=Path, default=Path("/etc/failberry/failberry.toml"))
    r.add_argument("--port", type=int, help="override health.port")
    r.add_argument("--listen", help="override health.listen")
    r.add_argument("--no-network", action="store_true",
                   help="leave routes, NAT and the firewall alone (trying it on a workstation)")
    r.set_defaults(func=cmd_run)

    s = sub.add_parser("status", help="show the running supervisor's status")
    s.add_argument("--json", action="store_true")
    s.add_argument("-c", "--config", type=Path, default=Path("/etc/failberry/failberry.toml"))
    s.add_argument("--url", help="status URL (default: from the config's health port)")
    s.set_defaults(func=_handler("failberry.statuscmd", "cmd_status"))

    n = sub.add_parser("net", help="network tools")
    nsub = n.add_subparsers(dest="net_command", metavar="ACTION", parser_class=_Parser)
    nsub.required = True
    nc = nsub.add_parser("clean", help="remove every route, rule and chain failberry added")
    nc.add_argument("-c", "--config", type=Path, default=Path("/etc/failberry/failberry.toml"))
    nc.add_argument("--state-dir", type=Path,
                    help="where failberry keeps the sysctl values to restore (default: the "
                         "config's paths.run_dir, else /run/failberry)")
    nc.set_defaults(func=cmd_net_clean)

    h = sub.add_parser("hostguard", help="hung-storage guard for servers")
    hsub = h.add_subparsers(dest="hostguard_command", metavar="ACTION", parser_class=_Parser)
    hsub.required = True
    for name, helptext in (("install", "write and apply the kernel hung-task settings"),
                           ("uninstall", "remove them and restore the previous values"),
                           ("check", "compare running and persisted values with the config")):
        hp = hsub.add_parser(name, help=helptext)
        hp.add_argument("-c", "--config", type=Path, help="failberry.toml with [hostguard]")
        hp.add_argument("--root", type=Path, help="operate on this root directory instead of /")
        hp.add_argument("--dry-run", action="store_true", help="say what would change")
        hp.set_defaults(func=_handler("failberry.hostguard.commands", f"cmd_{name}"))
    hw = hsub.add_parser("watch", help="watch for hung storage; alert and reboot")
    hw.add_argument("-c", "--config", type=Path, help="failberry.toml with [hostguard]")
    hw.add_argument("--dry-run", action="store_true", help="alert only, never reboot")
    hw.set_defaults(func=_handler("failberry.hostguard.commands", "cmd_watch"))
    return p


def cmd_config_check(args: argparse.Namespace) -> int:
    """`failberry config check`: every error, or a masked summary."""
    from failberry import config
    from failberry.config_render import summary
    from failberry.secretfiles import exposed

    cfg = config.load(args.config)
    print(f"{args.config}: OK")
    for line in summary(cfg):
        print(f"  {line}")
    for warning in exposed(args.config, cfg):
        print(f"failberry: warning: {warning}", file=sys.stderr)
    return 0


def cmd_net_clean(args: argparse.Namespace) -> int:
    """`failberry net clean`: the sysctl state is in the config's `paths.run_dir` (read when
    the config exists; a broken config is no reason to leave chains behind)."""
    from failberry import config
    from failberry.net.commands import cmd_net_clean as clean
    from failberry.runfile import RunFile

    if args.state_dir is None:
        run_dir = config.PathsConfig().run_dir
        if args.config.exists():
            try:
                run_dir = config.load(args.config).paths.run_dir
            except (ConfigError, OSError) as e:
                LOG.warning("cannot use %s (%s); looking for saved sysctls in %s",
                            args.config, str(e).splitlines()[0], run_dir)
        args.state_dir = Path(run_dir)
    # A running supervisor puts everything back within seconds (after the saved sysctls
    # were restored and forgotten): stop it first, which removes all but the closed chains.
    pid = RunFile(args.state_dir).running_pid()
    if pid is not None:
        raise FailberryError(f"the supervisor is running (pid {pid}) and would put it all "
                             "back; stop it first: systemctl stop failberryd")
    return clean(args)


def cmd_run(args: argparse.Namespace) -> int:
    """`failberry run`: the supervisor."""
    from failberry import config, supervisor
    from failberry.secretfiles import exposed

    cfg = config.load(args.config)
    if args.port is not None and not 0 <= args.port <= 65535:
        raise UsageError(f"--port: {args.port} is not a port")
    for warning in exposed(args.config, cfg):
        LOG.warning("%s", warning)
    return supervisor.run(cfg, port=args.port, host=args.listen, config_path=args.config,
                          manage_network=not args.no_network)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `failberry` command."""
    from failberry import logsetup

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        logsetup.setup(args.verbose)
        code: int = args.func(args)
        return code
    except ConfigError as e:
        for line in e.lines():
            print(line, file=sys.stderr)
        return e.exit_code
    except FailberryError as e:
        print(f"failberry: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("failberry: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    except Exception:  # noqa: BLE001 -- the last resort: show it, ask for a bug report
        traceback.print_exc()
        print(BUG_REPORT, file=sys.stderr)
        return 1
