"""A stand-in for `pppd` (this machine cannot open /dev/ppp): run it inside a network
namespace the test made.

    fake_pppd.py --control DIR file PEERFILE nodetach

Reads the peer file failberry wrote, opens its serial device, talks the chat script named in
its `connect` line over it (expect/send, ABORT strings, TIMEOUT), then makes a TUN interface
named by `ifname` with 10.64.64.64 peer 10.64.64.1 and logs like pppd ("local  IP address").
It exits like pppd: 5 on SIGTERM/SIGINT/SIGHUP, 8 when the chat fails, 16 when the modem
hangs up (NO CARRIER or the port going away), or the status written to DIR/pppd-exit."""

from __future__ import annotations

import fcntl
import os
import re
import select
import shlex
import signal
import struct
import subprocess
import sys
import termios
import time
import tty

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
LOCAL, REMOTE = "10.64.64.64", "10.64.64.1"


def log(msg: str) -> None:
    print(msg, flush=True)


def parse_peer(path: str) -> tuple[str, str, str]:
    device, chat_file, ifname = "", "", "ppp0"
    with open(path) as f:
        for line in f:
            words = shlex.split(line)
            if not words:
                continue
            if words[0].startswith("/dev/") or (not device and "/" in words[0]):
                device = words[0]
            elif words[0] == "connect":
                argv = shlex.split(words[1])
                chat_file = argv[argv.index("-f") + 1]
            elif words[0] == "ifname":
                ifname = words[1]
    return device, chat_file, ifname


def chat(fd: int, script: str) -> bool:
    """Run a chat(8) script: expect/send pairs, ABORT strings, TIMEOUT."""
    tokens = shlex.split(script)
    aborts: list[str] = []
    timeout = 45.0
    pairs: list[tuple[str, str]] = []
    i = 0
    while i < len(tokens):
        word = tokens[i]
        if word == "ABORT":
            aborts.append(tokens[i + 1])
        elif word == "TIMEOUT":
            timeout = float(tokens[i + 1])
        elif word == "REPORT":
            pass
        else:
            pairs.append((word, tokens[i + 1]))
        i += 2
    seen = b""
    for expect, send in pairs:
        if expect:
            deadline = time.monotonic() + timeout
            while expect.encode() not in seen:
                left = deadline - time.monotonic()
                if left <= 0:
                    log(f"chat: alarm waiting for {expect!r}")
                    return False
                r, _, _ = select.select([fd], [], [], left)
                if r:
                    try:
                        data = os.read(fd, 4096)
                    except OSError:
                        return False
                    if not data:
                        return False
                    seen += data
                    for a in aborts:
                        if a.encode() in seen:
                            log(f"chat: abort on ({a})")
                            return False
            seen = seen[seen.index(expect.encode()) + len(expect):]
        if send:
            os.write(fd, send.encode() + b"\r")
    return True


def make_tun(name: str) -> int:
    tun = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(tun, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    subprocess.run(["ip", "addr", "add", LOCAL, "peer", f"{REMOTE}/32", "dev", name],
                   check=True)
    subprocess.run(["ip", "link", "set", name, "up"], check=True)
    return tun


def main(argv: list[str]) -> int:
    control = argv[argv.index("--control") + 1]
    peer = argv[argv.index("file") + 1]
    exit_file = os.path.join(control, "pppd-exit")
    stop = {"sig": 0}

    def on_signal(signum: int, _frame: object) -> None:
        stop["sig"] = signum

    def die(signum: int, _frame: object) -> None:
        log(f"Terminating on signal {signum} while dialing")
        sys.exit(5)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, die)  # until the link is up
    device, chat_file, ifname = parse_peer(peer)
    log(f"pppd 2.4.9 (stand-in) started on {device}")
    try:
        fd = os.open(device, os.O_RDWR | os.O_NOCTTY)
    except OSError as exc:
        log(f"Failed to open {device}: {exc}")
        return 7
    tty.setraw(fd)
    termios.tcflush(fd, termios.TCIOFLUSH)
    with open(chat_file) as f:
        if not chat(fd, f.read()):
            log("Connect script failed")
            return 8
    log("Serial connection established.")
    log(f"Using interface {ifname}")
    log(f"Connect: {ifname} <--> {device}")
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    tun = make_tun(ifname)
    log(f"local  IP address {LOCAL}")
    log(f"remote IP address {REMOTE}")
    buf = b""
    try:
        while True:
            if stop["sig"]:
                log(f"Terminating on signal {stop['sig']}")
                return 5
            if os.path.exists(exit_file):
                with open(exit_file) as f:
                    status = int(f.read().strip())
                os.unlink(exit_file)
                log(f"Exit with status {status} (ordered by the test)")
                return status
            try:
                r, _, _ = select.select([fd], [], [], 0.1)
            except InterruptedError:
                continue
            if r:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    data = b""
                if not data:
                    log("Modem hangup")
                    return 16
                buf = (buf + data)[-256:]
                if re.search(rb"NO CARRIER", buf):
                    log("Modem hangup")
                    return 16
    finally:
        os.close(tun)  # a non-persistent TUN vanishes with its last fd


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
