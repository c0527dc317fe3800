"""A FUSE file system for the host guard tests and bench that can be told to stop answering
writes: an in-memory tree (python3-fusepy, module `fusepy` on Debian) served by this script in
its own process, controlled over a Unix socket with the lines `hang`, `answer`, `status`.

    python3 tests/hostguard_fusefs.py MOUNTPOINT CONTROL_SOCKET

While hung, `write`, `fsync` and `flush` block in the server, so the writer sits in the kernel
waiting for an answer (a real hang: exactly what a dead NFS server or EBS volume looks like to
the writer). `FuseMount` below starts it, and its `close()` is the careful teardown: answer
again, abort the connection if anything still waits, unmount (lazily if needed), kill the
server, and verify that no mount is left behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


# --------------------------------------------------------------------------------------------
# The server side (runs in its own process).


class _HangableFs:
    """An in-memory file system whose write path can be frozen."""

    def __init__(self) -> None:
        self.files: dict[str, bytearray] = {}
        self.dirs: set[str] = {"/"}
        self.lock = threading.Lock()
        self.answering = threading.Event()
        self.answering.set()
        self.blocked = 0
        self.now = time.time()

    # Writes wait here while hung. The wait ends when told to answer again.
    def _gate(self) -> None:
        if self.answering.is_set():
            return
        with self.lock:
            self.blocked += 1
        self.answering.wait()
        with self.lock:
            self.blocked -= 1

    def __call__(self, op: str, *args: Any) -> Any:
        from fusepy import FuseOSError

        method = getattr(self, op, None)
        if method is None:
            raise FuseOSError(errno.ENOSYS)
        return method(*args)

    def getattr(self, path: str, fh: Any = None) -> dict[str, Any]:
        from fusepy import FuseOSError

        base = {"st_uid": 0, "st_gid": 0, "st_atime": self.now, "st_mtime": self.now,
                "st_ctime": self.now}
        if path in self.dirs:
            return {**base, "st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2}
        if path in self.files:
            return {**base, "st_mode": stat.S_IFREG | 0o644, "st_nlink": 1,
                    "st_size": len(self.files[path])}
        raise FuseOSError(errno.ENOENT)

    def readdir(self, path: str, fh: Any) -> list[str]:
        prefix = path.rstrip("/") + "/"
        names = [p[len(prefix):] for p in (*self.files, *self.dirs)
                 if p != path and p.startswith(prefix) and "/" not in p[len(prefix):]]
        return [".", "..", *names]

    def mkdir(self, path: str, mode: int) -> int:
        self.dirs.add(path)
        return 0

    def create(self, path: str, mode: int, fi: Any = None) -> int:
        self.files.setdefault(path, bytearray())
        return 0

    def open(self, path: str, flags: int) -> int:
        from fusepy import FuseOSError

        if path not in self.files:
            raise FuseOSError(errno.ENOENT)
        return 0

    def truncate(self, path: str, length: int, fh: Any = None) -> int:
        self._gate()
        data = self.files.setdefault(path, bytearray())
        del data[length:]
        data.extend(b"\0" * (length - len(data)))
        return 0

    def read(self, path: str, size: int, offset: int, fh: Any) -> bytes:
        return bytes(self.files.get(path, b"")[offset:offset + size])

    def write(self, path: str, data: bytes, offset: int, fh: Any) -> int:
        self._gate()
        buf = self.files.setdefault(path, bytearray())
        if len(buf) < offset:
            buf.extend(b"\0" * (offset - len(buf)))
        buf[offset:offset + len(data)] = data
        return len(data)

    def fsync(self, path: str, datasync: int, fh: Any) -> int:
        self._gate()
        return 0

    def flush(self, path: str, fh: Any) -> int:
        return 0

    def release(self, path: str, fh: Any) -> int:
        return 0

    def unlink(self, path: str) -> int:
        self.files.pop(path, None)
        return 0

    def rename(self, old: str, new: str) -> int:
        self.files[new] = self.files.pop(old)
        return 0

    def utimens(self, path: str, times: Any = None) -> int:
        return 0

    def chmod(self, path: str, mode: int) -> int:
        return 0

    def chown(self, path: str, uid: int, gid: int) -> int:
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        return {"f_bsize": 4096, "f_frsize": 4096, "f_blocks": 1024, "f_bfree": 1024,
                "f_bavail": 1024, "f_files": 1024, "f_ffree": 1024, "f_namemax": 255}


def _control(fs: _HangableFs, path: str) -> None:
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(4)
    while True:
        conn, _ = srv.accept()
        with conn:
            cmd = conn.recv(64).decode().strip()
            if cmd == "hang":
                fs.answering.clear()
                reply = "ok"
            elif cmd == "answer":
                fs.answering.set()
                reply = "ok"
            elif cmd == "status":
                reply = f"answering={int(fs.answering.is_set())} blocked={fs.blocked}"
            else:
                reply = f"unknown command {cmd!r}"
            conn.sendall(reply.encode())


def serve(mountpoint: str, control: str) -> None:
    """Mount the file system and serve it in the foreground until unmounted."""
    from fusepy import FUSE

    fs = _HangableFs()
    threading.Thread(target=_control, args=(fs, control), daemon=True).start()
    # fusepy hands every call to the object via __call__; multithreaded, so a hung write
    # occupies one libfuse thread while others (getattr, the control socket) keep working.
    FUSE(fs, mountpoint, foreground=True, nothreads=False, fsname="fbhgtest",
         subtype="fbhgtest")


# --------------------------------------------------------------------------------------------
# The test side.


def mounted(mountpoint: Path) -> bool:
    """Whether a mount sits at this path (from /proc/self/mountinfo, which never blocks)."""
    target = str(mountpoint)
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 4 and parts[4].replace("\\040", " ") == target:
                return True
    return False


class FuseMount:
    """A running, mounted `_HangableFs`; `close()` always leaves no mount behind."""

    def __init__(self, mountpoint: Path, control: Path) -> None:
        self.mountpoint = mountpoint
        self.control = control
        mountpoint.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__)), str(mountpoint),
                                      str(control)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + 15
        while not (mounted(mountpoint) and control.exists()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                self.close()
                raise RuntimeError(f"FUSE test fs did not mount at {mountpoint}: {err}")
            time.sleep(0.05)
        # /sys/fs/fuse/connections/N: N is the super block's dev_t in the kernel's encoding
        # (major << 20 | minor); FUSE's anonymous devices have major 0.
        dev = os.stat(mountpoint).st_dev
        self.conn_id = os.major(dev) << 20 | os.minor(dev)

    def command(self, cmd: str) -> str:
        """Send `hang`, `answer` or `status`; return the reply."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(self.control))
            s.sendall(cmd.encode())
            return s.recv(256).decode()

    def hang(self) -> None:
        """Stop answering writes."""
        assert self.command("hang") == "ok"

    def answer(self) -> None:
        """Answer writes again; blocked writers complete."""
        assert self.command("answer") == "ok"

    def abort(self) -> bool:
        """Abort the FUSE connection (every waiting request fails with ENOTCONN)."""
        path = Path(f"/sys/fs/fuse/connections/{self.conn_id}/abort")
        try:
            path.write_text("1")
            return True
        except OSError:
            return False

    def kill_server(self) -> None:
        """Kill the server: closing /dev/fuse aborts the connection like the abort file."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def close(self) -> None:
        """Release any hang and unmount, escalating; raise if a mount is still left."""
        with contextlib.suppress(Exception):
            self.answer()
        if mounted(self.mountpoint) and subprocess.run(
                ["umount", str(self.mountpoint)], capture_output=True, timeout=20).returncode:
                self.abort()
                subprocess.run(["umount", "-l", str(self.mountpoint)], capture_output=True,
                               timeout=20)
        if self.proc.poll() is None:
            # The server exits once unmounted; killing it also closes /dev/fuse, which aborts
            # the connection, so nothing can stay waiting on it.
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        if mounted(self.mountpoint):
            subprocess.run(["umount", "-l", str(self.mountpoint)], capture_output=True,
                           timeout=20)
        with contextlib.suppress(OSError):
            self.control.unlink()
        if mounted(self.mountpoint):
            raise RuntimeError(f"FUSE test mount {self.mountpoint} is still mounted")


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2])
