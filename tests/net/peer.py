"""Programs for the "internet" namespace: `python peer.py tcp HOST PORT` answers every TCP
connection with the address it came from, then echoes lines; `python peer.py udp HOST PORT`
prints `MONOTONIC SRC WORD` for every datagram, WORD its payload's first word (the clock is
system-wide, so a benchmark in another namespace can compare times, and put its send time in
the payload)."""

from __future__ import annotations

import socket
import sys
import threading
import time


def _serve(conn: socket.socket, addr: tuple[str, int]) -> None:
    with conn:
        try:
            conn.sendall(f"{addr[0]}\n".encode())
            while data := conn.recv(4096):
                conn.sendall(data)
        except OSError:
            pass


def tcp(host: str, port: int) -> None:
    """Who-am-I and echo server."""
    with socket.create_server((host, port), reuse_port=True) as srv:
        print("ready", flush=True)
        while True:
            conn, addr = srv.accept()
            threading.Thread(target=_serve, args=(conn, addr), daemon=True).start()


def udp(host: str, port: int) -> None:
    """Log every datagram's arrival time and source."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, port))
        print("ready", flush=True)
        while True:
            data, addr = s.recvfrom(2048)
            word = (data.split() or [b"-"])[0].decode(errors="replace")
            print(f"{time.monotonic():.6f} {addr[0]} {word}", flush=True)


if __name__ == "__main__":
    {"tcp": tcp, "udp": udp}[sys.argv[1]](sys.argv[2], int(sys.argv[3]))
