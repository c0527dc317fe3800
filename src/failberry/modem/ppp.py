"""pppd: the peer and chat files written from `[modem]`, and `pppd nodetach` run as a child
whose exit status (man pppd, EXIT STATUS) and negotiated address we follow."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shlex
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from failberry.aio import within
from failberry.config import ModemConfig
from failberry.modem.errors import PppError

LOG = logging.getLogger(__name__)

PEER_NAME = "failberry"
# pppd logs "local  IP address 10.1.2.3" (two spaces) when IPCP comes up.
_LOCAL_IP = re.compile(r"local\s+IP address\s+(\d+\.\d+\.\d+\.\d+)")
_USING = re.compile(r"Using interface (\S+)")


def chat_quote(text: str) -> str:
    """A chat(8) string: single quotes keep the double quotes of `AT+CGDCONT=1,"IP",...`."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def chat_script(cfg: ModemConfig) -> str:
    """The chat file: abort on dial failures, set the APN, run the init commands, dial."""
    lines = [
        "ABORT BUSY",
        "ABORT 'NO CARRIER'",
        "ABORT 'NO DIALTONE'",
        "ABORT 'NO ANSWER'",
        "ABORT ERROR",
        "REPORT CONNECT",
        "TIMEOUT 30",
        "'' AT",
        "OK ATE0",
    ]
    cgdcont = 'AT+CGDCONT=1,"IP","' + cfg.apn + '"'
    lines.append(f"OK {chat_quote(cgdcont)}")
    lines += [f"OK {chat_quote(cmd)}" for cmd in cfg.init]
    lines += [f"OK {chat_quote('ATD' + cfg.dial)}", "CONNECT ''"]
    return "\n".join(lines) + "\n"


def peer_options(cfg: ModemConfig, port: str, chat_file: Path, interface: str,
                 chat: str = "/usr/sbin/chat") -> str:
    """The peer file. Routes and DNS stay with failberry's network part, so none here."""
    lines = [
        port,
        "115200",
        "noauth",
        "nodefaultroute",
        "noipdefault",
        "usepeerdns",
        "novj",
        "nocrtscts",
        "local",
        "lock",
        "maxfail 1",  # failberry decides when to redial, not pppd
        "lcp-echo-interval 10",
        "lcp-echo-failure 3",
        f"ifname {interface}",
        f"connect {shlex.quote(f'{chat} -v -f {chat_file}')}",
    ]
    if cfg.username:
        lines.append(f'user "{cfg.username}"')
    if cfg.password is not None:
        lines.append(f'password "{cfg.password.reveal()}"')
    return "\n".join(lines) + "\n"


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` with mode 0600 from the first byte (it may hold a password)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


@dataclass(frozen=True)
class PppFiles:
    """Where the generated files went."""

    peer: Path
    chat: Path


def write_ppp_files(cfg: ModemConfig, port: str, directory: Path, interface: str) -> PppFiles:
    """Write the chat and peer files for dialing on `port`."""
    chat = directory / f"{PEER_NAME}.chat"
    peer = directory / PEER_NAME
    write_private(chat, chat_script(cfg))
    write_private(peer, peer_options(cfg, port, chat, interface))
    return PppFiles(peer, chat)


class PppRunner:
    """Runs one pppd at a time; `argv` is the pppd command (tests put a stand-in there)."""

    exclusive = True  # pppd needs the data port to itself
    why = ""  # pppd's exit status says it all

    def __init__(self, cfg: ModemConfig, directory: Path, interface: str = "ppp0",
                 argv: Sequence[str] = ("/usr/sbin/pppd",), stop_grace: float = 5.0) -> None:
        self.cfg = cfg
        self.directory = directory
        self.interface = interface
        self.argv = list(argv)
        self.stop_grace = stop_grace
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def running(self) -> bool:
        """Is a pppd child alive?"""
        return self._proc is not None and self._proc.returncode is None

    async def run(self, port: str, on_up: Callable[[str, str], None]) -> int:
        """Run pppd on `port` until it exits; `on_up(interface, address)` when IPCP is up."""
        files = write_ppp_files(self.cfg, port, self.directory, self.interface)
        argv = [*self.argv, "file", str(files.peer), "nodetach"]
        LOG.info("starting pppd on %s: %s", port, shlex.join(argv))
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            raise PppError(f"cannot run {shlex.join(argv)}: {exc}") from None
        self._proc = proc
        interface = self.interface
        assert proc.stdout is not None
        try:
            async for raw in proc.stdout:
                line = raw.decode("utf-8", "replace").rstrip()
                LOG.debug("pppd: %s", line)
                m = _USING.search(line)
                if m:
                    interface = m.group(1)
                m = _LOCAL_IP.search(line)
                if m:
                    on_up(interface, m.group(1))
            return await proc.wait()
        finally:
            if proc.returncode is None:
                await terminate(proc, self.stop_grace, "pppd")
            self._proc = None

    def attach(self, session: object) -> None:
        """pppd talks to the stick through its chat script, not the session."""

    def select(self, data: str, net: str | None) -> None:
        """Nothing to follow: the interface is pppd's `ifname`."""

    def urc(self, line: str) -> None:
        """pppd learns of hangups itself."""

    async def stop(self) -> None:
        """SIGTERM pppd (it hangs up and exits 5); SIGKILL if it lingers."""
        if self._proc is not None and self._proc.returncode is None:
            await terminate(self._proc, self.stop_grace, "pppd")


async def terminate(proc: asyncio.subprocess.Process, grace: float, name: str, *,
                    group: bool = False) -> None:
    """SIGTERM `proc`, wait `grace` seconds, then SIGKILL it (its whole process group with
    `group`, for a program started in its own session that forks helpers)."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        await within(proc.wait(), grace)
    except TimeoutError:
        LOG.warning("%s ignored SIGTERM for %gs; killing it", name, grace)
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
        await _reaped(proc, grace, name)


async def _reaped(proc: asyncio.subprocess.Process, limit: float, name: str) -> None:
    """Wait for a killed `proc`, at most `limit` seconds. asyncio's `wait()` (Python 3.11)
    also waits for the child's output pipe to close, which a grandchild that inherited it
    can hold open for ever: the exit status alone is what counts here."""
    try:
        await within(proc.wait(), limit)
    except TimeoutError:
        if proc.returncode is None:
            LOG.error("%s (pid %d) did not end %gs after SIGKILL", name, proc.pid, limit)
        else:
            LOG.warning("%s exited, but a program it started still holds its output open",
                        name)
