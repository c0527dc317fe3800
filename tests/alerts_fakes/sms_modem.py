"""A fake stick's SMS side on a pty, run in a thread of the test: it speaks AT+CMGF (text and
PDU mode), AT+CSCS, AT+CNMI, AT+CMGS (with the `> ` prompt; bytes typed before the prompt
are lost, as on sticks that flush their input), AT+CMGL=4, AT+CMGD, and announces messages
the test delivers with a +CMTI URC. Its PDU code is written apart from failberry's, from
3GPP TS 23.040, so a shared mistake cannot pass unseen."""

from __future__ import annotations

import os
import pty
import select
import threading
import time
import tty
from dataclasses import dataclass
from pathlib import Path

GSM7 = ("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
        "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")


@dataclass
class Sent:
    """One AT+CMGS the fake accepted."""

    at: float
    mode: str  # "text" or "pdu"
    command: str  # the AT+CMGS line as received
    body: str  # the text (text mode) or the PDU hex
    to: str = ""
    text: str = ""  # decoded
    concat: tuple[int, int, int] | None = None  # (ref, total, seq)


def _bits_unpack(data: bytes, count: int, skip_bits: int) -> list[int]:
    bits = "".join(f"{b:08b}"[::-1] for b in data)  # LSB first
    return [int(bits[skip_bits + 7 * i: skip_bits + 7 * i + 7][::-1], 2) for i in range(count)]


def _bits_pack(septets: list[int]) -> bytes:
    bits = "".join(f"{s:07b}"[::-1] for s in septets)
    bits += "0" * (-len(bits) % 8)
    return bytes(int(bits[i:i + 8][::-1], 2) for i in range(0, len(bits), 8))


def _bcd(number: str) -> bytes:
    d = number.lstrip("+")
    d += "F" * (len(d) % 2)
    return bytes(int(d[i + 1] + d[i], 16) for i in range(0, len(d), 2))


def decode_submit(hex_pdu: str) -> tuple[str, str, tuple[int, int, int] | None]:
    """(to, text, concatenation) of an SMS-SUBMIT with its SMSC field."""
    b = bytes.fromhex(hex_pdu)
    i = 1 + b[0]
    first = b[i]
    assert first & 0x03 == 0x01, "not an SMS-SUBMIT"
    n_digits, toa = b[i + 2], b[i + 3]
    n = (n_digits + 1) // 2
    digits = "".join(f"{x & 15:X}{x >> 4:X}" for x in b[i + 4:i + 4 + n])[:n_digits]
    to = ("+" if toa == 0x91 else "") + digits
    j = i + 4 + n
    vpf = (first >> 3) & 3
    dcs = b[j + 1]
    j += 2 + (1 if vpf == 2 else 7 if vpf in (1, 3) else 0)
    udl, ud = b[j], b[j + 1:]
    concat = None
    hlen = 0
    if first & 0x40:
        hlen = ud[0] + 1
        if ud[1] == 0x00:
            concat = (ud[3], ud[4], ud[5])
    if dcs == 0x08:
        text = ud[hlen:udl].decode("utf-16-be")
    else:
        skip = hlen * 8 + (-(hlen * 8) % 7) if hlen else 0
        septets = _bits_unpack(ud, udl - skip // 7, skip) if hlen else _bits_unpack(ud, udl, 0)
        out, esc = [], False
        ext = {0x14: "^", 0x28: "{", 0x29: "}", 0x2F: "\\", 0x3C: "[", 0x3D: "~", 0x3E: "]",
               0x40: "|", 0x65: "€"}
        for s in septets:
            if esc:
                out.append(ext[s])
                esc = False
            elif s == 0x1B:
                esc = True
            else:
                out.append(GSM7[s])
        text = "".join(out)
    return to, text, concat


def encode_deliver(sender: str, text: str) -> str:
    """An SMS-DELIVER PDU (with an SMSC field) from `sender`, GSM 7-bit or UCS2."""
    smsc = bytes([0x91]) + _bcd("+491710760000")
    if sender.lstrip("+").isdigit():
        oa = bytes([len(sender.lstrip("+")), 0x91 if sender.startswith("+") else 0x81])
        oa += _bcd(sender)
    else:  # alphanumeric
        septets = [GSM7.index(c) for c in sender]
        packed = _bits_pack(septets)
        oa = bytes([len(packed) * 2, 0xD0]) + packed
    scts = bytes.fromhex("62110320000000")
    if all(c in GSM7 for c in text):
        septets = [GSM7.index(c) for c in text]
        ud = bytes([len(septets)]) + _bits_pack(septets)
        dcs = 0x00
    else:
        raw = text.encode("utf-16-be")
        ud = bytes([len(raw)]) + raw
        dcs = 0x08
    tpdu = bytes([0x04]) + oa + bytes([0x00, dcs]) + scts + ud
    return (bytes([len(smsc)]) + smsc + tpdu).hex().upper()


class FakeSmsModem:
    """The fake on `directory/name` (a symlink to the pty)."""

    def __init__(self, directory: Path, name: str = "ttyUSB3", *,
                 flush_typeahead: bool = True) -> None:
        self.master, self.slave = pty.openpty()
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        self.path = directory / name
        self.path.symlink_to(os.ttyname(self.slave))
        self.log: list[str] = []
        self.sent: list[Sent] = []
        self.store: dict[int, str] = {}  # index -> DELIVER PDU hex
        self.deleted: list[int] = []
        self.cms_error: int | None = None  # answer the next CMGS bodies with this
        self.lost_typeahead = 0
        self.flush_typeahead = flush_typeahead  # False: a stick that buffers the body
        self._next_index = 1
        self._mr = 0
        self.echo = True
        self.cmgf = 0
        self._buf = b""
        self._cmgs: str | None = None  # the CMGS line whose body is awaited
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the thread and release the pty."""
        self._stop.set()
        self._thread.join(2)
        os.close(self.master)
        os.close(self.slave)
        self.path.unlink(missing_ok=True)

    def _send(self, data: str) -> None:
        os.write(self.master, data.encode())

    def deliver(self, sender: str, text: str) -> int:
        """Store a message and announce it."""
        with self._lock:
            idx = self._next_index
            self._next_index += 1
            self.store[idx] = encode_deliver(sender, text)
        self._send(f'\r\n+CMTI: "SM",{idx}\r\n')
        return idx

    def _serve(self) -> None:
        while not self._stop.is_set():
            r, _, _ = select.select([self.master], [], [], 0.05)
            if not r:
                continue
            try:
                data = os.read(self.master, 4096)
            except (BlockingIOError, OSError):
                continue
            self._feed(data)

    def _feed(self, data: bytes) -> None:
        self._buf += data
        while self._buf:
            if self._cmgs is not None:
                for end in (b"\x1a", b"\x1b"):
                    if end in self._buf:
                        body, _, self._buf = self._buf.partition(end)
                        cmd, self._cmgs = self._cmgs, None
                        if end == b"\x1a":
                            self._submit(cmd, body.decode())
                        else:
                            self._send("\r\nOK\r\n")
                        break
                else:
                    return
                continue
            if b"\r" not in self._buf:
                return
            line, _, rest = self._buf.partition(b"\r")
            self._buf = rest.lstrip(b"\n")
            cmd = line.decode(errors="replace").strip()
            if not cmd:
                continue
            self._command(cmd)
            if self._cmgs is not None and self._buf and self.flush_typeahead:
                # Typed ahead of the prompt: this stick flushes its input when it prompts.
                self.lost_typeahead += len(self._buf)
                self._buf = b""

    def _ok(self, *lines: str) -> None:
        self._send("".join(f"\r\n{ln}\r\n" for ln in lines) + "\r\nOK\r\n")

    def _command(self, cmd: str) -> None:
        self.log.append(cmd)
        up = cmd.upper()
        if self.echo:
            self._send(cmd + "\r")
        if up == "ATE0":
            self.echo = False
            self._ok()
        elif up in ("AT", "AT+CMEE=1") or up.startswith(("AT+CSCS=", "AT+CNMI=")):
            self._ok()
        elif up.startswith("AT+CMGF="):
            self.cmgf = int(up[8:])
            self._ok()
        elif up.startswith("AT+CMGS="):
            self._cmgs = cmd
            self._send("\r\n> ")
        elif up == "AT+CMGL=4" and self.cmgf == 0:
            with self._lock:
                items = sorted(self.store.items())
            lines = []
            for idx, pdu in items:
                lines += [f"+CMGL: {idx},0,,{len(pdu) // 2 - 1 - int(pdu[:2], 16)}", pdu]
            self._ok(*lines)
        elif up.startswith("AT+CMGD="):
            idx = int(up[8:])
            with self._lock:
                found = self.store.pop(idx, None)
            if found is None:
                self._send("\r\n+CMS ERROR: 321\r\n")
            else:
                self.deleted.append(idx)
                self._ok()
        else:
            self._send("\r\nERROR\r\n")

    def _submit(self, cmd: str, body: str) -> None:
        if self.cms_error is not None:
            self._send(f"\r\n+CMS ERROR: {self.cms_error}\r\n")
            return
        self._mr = (self._mr + 1) % 256
        if self.cmgf == 1:
            to = cmd.split("=", 1)[1].strip('"')
            self.sent.append(Sent(time.monotonic(), "text", cmd, body, to, body))
        else:
            length = int(cmd.split("=", 1)[1])
            raw = bytes.fromhex(body)
            if length != len(raw) - 1 - raw[0]:
                self._send("\r\n+CMS ERROR: 304\r\n")
                return
            to, text, concat = decode_submit(body)
            self.sent.append(Sent(time.monotonic(), "pdu", cmd, body, to, text, concat))
        self._ok(f"+CMGS: {self._mr}")

    def messages(self) -> list[tuple[str, str]]:
        """(to, text) per message, concatenated parts joined."""
        out: list[tuple[str, str]] = []
        parts: dict[tuple[str, int], dict[int, str]] = {}
        for s in self.sent:
            if s.concat is None:
                out.append((s.to, s.text))
                continue
            ref, total, seq = s.concat
            got = parts.setdefault((s.to, ref), {})
            got[seq] = s.text
            if len(got) == total:
                out.append((s.to, "".join(got[i] for i in range(1, total + 1))))
        return out
