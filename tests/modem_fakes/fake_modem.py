"""A scriptable fake ZTE MF180-class modem on ptys: the tests' own program.

    python fake_modem.py DIR SCENARIO_JSON

Makes DIR/ttyUSB1 (AT control port) and DIR/ttyUSB2 (the "Modem" port pppd dials on) as
symlinks to pty slaves, answers AT commands like the stick does (echo on until ATE0, ZTE
identity, +CME ERROR codes, registration URCs), and takes orders on the Unix socket DIR/ctl,
one JSON object a line:

    {"op": "set", "key": "reg", "value": 1}     change a scenario value (reg sends a URC)
    {"op": "storm", "rate": 1000, "seconds": 10} URCs at that rate on the control port
    {"op": "garbage", "hex": "00ff0d0a"}       raw bytes on the control port
    {"op": "hangup"}                           NO CARRIER on the data port
    {"op": "unplug"} / {"op": "replug"}        the ports vanish / come back (new ptys)
    {"op": "get"}                              counters as JSON
    {"op": "wedge"}                            the bearer drops without a word (ncm/ecm)
    {"op": "sms", "from": "+49...", "text": "status"}  store an SMS, announce it with +CMTI

SMS on the control port (TS 27.005): AT+CMGF, AT+CSCS, AT+CNMI, AT+CMGS with the `> ` prompt
(bytes typed before the prompt are discarded, as on sticks that flush their input when they
prompt), AT+CMGL=4 in PDU mode, AT+CMGD; `get` reports "sms_sent" (command, body, to, text)
and "sms_store", "sms_deleted", "lost_typeahead".

"maker"/"model" set the identity (a Huawei answers AT^NDISDUP); "bearer" (see fake_bearer)
gives the stick an Ethernet side whose bearer AT commands raise and drop.

Scenario keys beyond the defaults below: "urc_n" (registration URCs carry <n>, as some
firmware sends them), "register_after" (seconds after plugging until the network registers,
announced by URC), "data_mode": "strict" (after CONNECT the port takes everything as data but
`+++` between 1 s guard times), "slow" {command: seconds} (answer once that late; the stick
answers in order, so everything behind it waits too), "drop" {command prefix: n} (ignore the
first n such commands), "cpinr" (knows AT+CPINR, with "pin_tries").
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import selectors
import socket
import sys
import time
import tty
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from alerts_fakes.sms_modem import decode_submit, encode_deliver
from modem_fakes.fake_bearer import Bearer  # run as a script

GUARD = 1.0  # V.250 S12: the escape's guard time

DEFAULTS: dict[str, Any] = {
    "sim": "ready",  # ready | pin | missing | puk | error (plain ERROR) | bare (OK alone)
    #                  | not_ready
    "pin": "1234",
    "reg": 1,  # <stat> for +CREG/+CGREG: 1 home, 2 searching, 3 denied, 5 roaming
    "silent": False,
    "cme": {},  # command (upper case) -> CME code
    "csq": "17,99",
    "reset_delay": 0.3,
    "urc_n": False,
    "register_after": 0.0,
    "data_mode": "",
    "slow": {},
    "drop": {},
    "cpinr": False,
    "pin_plain_error": False,  # a wrong PIN gets ERROR, not +CME ERROR: 16
    "pin_tries": 3,
    "maker": "ZTE CORPORATION",
    "model": "MF180",
    "bearer": None,
}


class Port:
    """One pty: the master end we talk through, and a held slave fd so no EIO spins."""

    def __init__(self, link: str) -> None:
        self.link = link
        self.master, self.slave = pty.openpty()
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        name = os.ttyname(self.slave)
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(name, link)
        self.buf = b""
        self.echo = True
        self.data = False  # in data mode (after CONNECT, strict scenario)
        self.last_rx = 0.0
        self.escape_at = 0.0  # `+++` seen after a guard time; OK after another one
        self.cmgs: str | None = None  # AT+CMGS prompted: its body is awaited

    def close(self) -> None:
        if os.path.lexists(self.link):
            os.unlink(self.link)
        os.close(self.master)
        os.close(self.slave)

    def send(self, text: str | bytes) -> None:
        data = text.encode() if isinstance(text, str) else text
        # A reader that does not read loses bytes, as on a real UART.
        with contextlib.suppress(BlockingIOError):
            os.write(self.master, data)


class Modem:
    def __init__(self, directory: str, scenario: dict[str, Any]) -> None:
        self.dir = directory
        self.s = {**DEFAULTS, **scenario}
        self.sel = selectors.DefaultSelector()
        self.ports: dict[str, Port] = {}
        self.counters: dict[str, int] = {"pin_attempts": 0, "zcdrun": 0, "cfun_reset": 0,
                                         "commands": 0, "urcs": 0, "plugs": 0, "escapes": 0,
                                         "ignored_in_data_mode": 0}
        self.register_at = 0.0
        self.log: list[str] = []
        self.storm_until = 0.0
        self.storm_rate = 0
        self.storm_next = 0.0
        self.replug_at = 0.0
        self.bearer = Bearer(self.s["bearer"]) if self.s["bearer"] else None
        self.cmgf = 0
        self.sms_sent: list[dict[str, str]] = []
        self.sms_store: dict[int, str] = {}  # index -> SMS-DELIVER PDU hex
        self.sms_deleted: list[int] = []
        self.sms_next = 1
        self.lost_typeahead = 0
        self.plug()
        ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        ctl.bind(os.path.join(directory, "ctl"))
        ctl.listen(4)
        self.sel.register(ctl, selectors.EVENT_READ, ("listen", ctl))

    def plug(self) -> None:
        self.counters["plugs"] += 1
        if self.s["register_after"] and self.counters["plugs"] == 1:
            self.register_at = time.monotonic() + self.s["register_after"]
        for name in ("ttyUSB1", "ttyUSB2"):
            port = Port(os.path.join(self.dir, name))
            self.ports[name] = port
            self.sel.register(port.master, selectors.EVENT_READ, ("port", name))

    def unplug(self) -> None:
        for port in self.ports.values():
            self.sel.unregister(port.master)
            port.close()
        self.ports = {}

    # -- AT

    def reply(self, port: Port, *lines: str) -> None:
        port.send("".join(f"\r\n{ln}\r\n" for ln in lines))

    def reg_urc(self, stat: int) -> None:
        n = "2," if self.s["urc_n"] else ""
        self.urc(f'+CREG: {n}{stat},"00C3","0000A13B",2')

    def command(self, name: str, port: Port, cmd: str) -> None:
        self.counters["commands"] += 1
        self.log.append(cmd if not cmd.upper().startswith("AT+CPIN=") else "AT+CPIN=<pin>")
        up = cmd.upper()
        s = self.s
        if s["silent"]:
            return
        for prefix, left in s["drop"].items():
            if up.startswith(prefix) and left > 0:
                s["drop"][prefix] = left - 1
                return
        if up in s["slow"]:
            time.sleep(s["slow"].pop(up))
        if port.echo:
            port.send(cmd + "\r")
        if up in s["cme"]:
            self.reply(port, f"+CME ERROR: {s['cme'][up]}")
            return
        reg = s["reg"]
        if up in ("AT", "ATZ", "AT+CMEE=1", "AT+CREG=2", "AT+CGREG=2", "ATH") or \
                up.startswith("AT+CGDCONT="):
            self.reply(port, "OK")
        elif up in ("ATE0", "ATE1"):
            port.echo = up == "ATE1"
            self.reply(port, "OK")
        elif up == "AT+CGMI":
            self.reply(port, s["maker"], "OK")
        elif up == "AT+CGMM":
            self.reply(port, s["model"], "OK")
        elif up == "AT+CGSN":
            self.reply(port, "866666012345678", "OK")
        elif up == "AT+ZCDRUN=8":
            self.counters["zcdrun"] += 1
            self.reply(port, "Close autorun state result(0:FAIL 1:SUCCESS):1", "OK")
        elif up == "AT+CPIN?":
            sim = s["sim"]
            if sim == "missing":
                self.reply(port, "+CME ERROR: 10")
            elif sim == "error":
                self.reply(port, "ERROR")
            elif sim == "bare":
                self.reply(port, "OK")
            else:
                self.reply(port, {"ready": "+CPIN: READY", "pin": "+CPIN: SIM PIN",
                                  "puk": "+CPIN: SIM PUK",
                                  "not_ready": "+CPIN: NOT READY"}[sim], "OK")
        elif up == 'AT+CPINR="SIM PIN"' and s["cpinr"]:
            self.reply(port, f"+CPINR: SIM PIN,{s['pin_tries']},3", "OK")
        elif up.startswith("AT+CPIN="):
            self.counters["pin_attempts"] += 1
            if s["sim"] == "pin" and cmd.split("=", 1)[1].strip('"') == s["pin"]:
                s["sim"] = "ready"
                self.reply(port, "OK")
            else:
                s["pin_tries"] -= 1
                self.reply(port, "ERROR" if s["pin_plain_error"] else "+CME ERROR: 16")
        elif up == "AT+CREG?":
            self.reply(port, f'+CREG: 2,{reg},"00C3","0000A13B",2', "OK")
        elif up == "AT+CGREG?":
            self.reply(port, f'+CGREG: 2,{reg},"00C3","0000A13B",6,"01"', "OK")
        elif up == "AT+CSQ":
            self.reply(port, f"+CSQ: {s['csq']}", "OK")
        elif up == "AT+COPS?":
            self.reply(port, '+COPS: 0,0,"Vodafone UK",2', "OK")
        elif up.startswith(("AT+CMGF=", "AT+CSCS=", "AT+CNMI=", "AT+CMGS=", "AT+CMGL=",
                            "AT+CMGD=")):
            self.sms_command(port, cmd, up)
        elif up.startswith("ATD"):
            self.reply(port, "CONNECT 7200000")
            port.data = s["data_mode"] == "strict"
        elif up == "AT+CFUN=1,1":
            self.counters["cfun_reset"] += 1
            self.reply(port, "OK")
            if self.bearer is not None:
                self.bearer.stop()
            self.unplug()
            self.replug_at = time.monotonic() + s["reset_delay"]
        elif self.bearer is not None and (done := self.bearer.command(up)) is not None:
            self.reply(port, "OK" if done[0] else "ERROR")
            if done[1]:
                self.urc(done[1])
        else:  # AT+CEREG=2 and friends: an MF180 is a 3G stick
            self.reply(port, "ERROR")

    def sms_command(self, port: Port, cmd: str, up: str) -> None:
        if up.startswith("AT+CMGF="):
            self.cmgf = int(up[8:])
            self.reply(port, "OK")
        elif up.startswith(("AT+CSCS=", "AT+CNMI=")):
            self.reply(port, "OK")
        elif up.startswith("AT+CMGS="):
            port.cmgs = cmd
            port.send("\r\n> ")
        elif up == "AT+CMGL=4" and self.cmgf == 0:
            lines = []
            for idx, pdu in sorted(self.sms_store.items()):
                lines += [f"+CMGL: {idx},0,,{len(pdu) // 2 - 1 - int(pdu[:2], 16)}", pdu]
            self.reply(port, *lines, "OK")
        elif up.startswith("AT+CMGD="):
            idx = int(up[8:])
            if self.sms_store.pop(idx, None) is None:
                self.reply(port, "+CMS ERROR: 321")
            else:
                self.sms_deleted.append(idx)
                self.reply(port, "OK")
        else:
            self.reply(port, "+CMS ERROR: 302")

    def sms_body(self, port: Port, cmd: str, body: str) -> None:
        if self.cmgf == 1:
            to, text = cmd.split("=", 1)[1].strip('"'), body
        else:
            to, text, _ = decode_submit(body)
        self.sms_sent.append({"command": cmd, "body": body, "to": to, "text": text})
        self.reply(port, f"+CMGS: {len(self.sms_sent) % 256}", "OK")

    def deliver(self, sender: str, text: str) -> None:
        idx, self.sms_next = self.sms_next, self.sms_next + 1
        self.sms_store[idx] = encode_deliver(sender, text)
        self.urc(f'+CMTI: "SM",{idx}')

    def urc(self, line: str) -> None:
        port = self.ports.get("ttyUSB1")
        if port is not None:
            self.counters["urcs"] += 1
            port.send(f"\r\n{line}\r\n")

    def readable(self, name: str) -> None:
        port = self.ports[name]
        try:
            data = os.read(port.master, 4096)
        except (BlockingIOError, OSError):
            return
        now = time.monotonic()
        if port.data:
            # Data mode: all of it is data, except `+++` alone between guard times.
            quiet = now - port.last_rx >= GUARD
            port.escape_at = now if data == b"+++" and quiet else 0.0
            port.last_rx = now
            if not port.escape_at:
                self.counters["ignored_in_data_mode"] += 1
            return
        port.last_rx = now
        port.buf += data
        while True:
            if port.cmgs is not None:  # the body, ended by Ctrl-Z (send) or ESC (abort)
                ends = [i for i in (port.buf.find(b"\x1a"), port.buf.find(b"\x1b")) if i >= 0]
                if not ends:
                    return
                end = min(ends)
                body, stop, port.buf = port.buf[:end], port.buf[end:end + 1], port.buf[end + 1:]
                cmd, port.cmgs = port.cmgs, None
                if stop == b"\x1a":
                    self.sms_body(port, cmd, body.decode("ascii", "replace"))
                else:
                    self.reply(port, "OK")
                continue
            if b"\r" not in port.buf:
                return
            raw, _, port.buf = port.buf.partition(b"\r")
            cmd = raw.strip(b"\n\x00 ").decode("ascii", "replace")
            if cmd.upper().startswith("AT"):
                self.command(name, port, cmd)
                if name not in self.ports:
                    return  # the command unplugged us
                if port.cmgs is not None and port.buf:
                    # Typed ahead of the prompt: this stick flushes its input when it prompts.
                    self.lost_typeahead += len(port.buf)
                    port.buf = b""

    # -- control

    def control(self, conn: socket.socket) -> None:
        data = conn.recv(65536)
        if not data:
            self.sel.unregister(conn)
            conn.close()
            return
        for raw in data.decode().splitlines():
            order = json.loads(raw)
            out: Any = "ok"
            op = order["op"]
            if op == "set":
                self.s[order["key"]] = order["value"]
                if order["key"] == "reg":
                    self.reg_urc(order["value"])
            elif op == "storm":
                self.storm_rate = order["rate"]
                self.storm_until = time.monotonic() + order["seconds"]
                self.storm_next = time.monotonic()
            elif op == "garbage":
                if "ttyUSB1" in self.ports:
                    self.ports["ttyUSB1"].send(bytes.fromhex(order["hex"]))
            elif op == "urc":
                self.urc(order["line"])
            elif op == "sms":
                self.deliver(order["from"], order["text"])
            elif op == "hangup":
                if "ttyUSB2" in self.ports:
                    self.ports["ttyUSB2"].data = False
                    self.reply(self.ports["ttyUSB2"], "NO CARRIER")
            elif op == "unplug":
                self.unplug()
            elif op == "replug":
                if not self.ports:
                    self.plug()
            elif op == "wedge":
                if self.bearer is not None:
                    self.bearer.stop()
            elif op == "get":
                out = {**self.counters, "log": self.log, "plugged": bool(self.ports),
                       "sms_sent": self.sms_sent, "sms_store": self.sms_store,
                       "sms_deleted": self.sms_deleted, "lost_typeahead": self.lost_typeahead}
                if self.bearer is not None:
                    out.update(bearer_up=self.bearer.up, bearer_ups=self.bearer.ups)
            conn.sendall((json.dumps(out) + "\n").encode())

    def storm(self) -> None:
        now = time.monotonic()
        if now >= self.storm_until:
            self.storm_rate = 0
            return
        # The odd URCs a ZTE stick sends while it hunts for a network.
        urcs = ['+CREG: 1,"00C3","0000A13B",2', "^MODE: 5,4", '+ZPAS: "UMTS","CS_PS"',
                "RING", "+CGREG: 1", "^DSFLOWRPT: 0000003C,00000000,00000000"]
        while self.storm_next <= now:
            self.urc(urcs[self.counters["urcs"] % len(urcs)])
            self.storm_next += 1.0 / self.storm_rate

    def timers(self) -> None:
        now = time.monotonic()
        if self.register_at and now >= self.register_at:
            self.register_at = 0.0
            self.s["reg"] = 1
            self.reg_urc(1)
        for port in self.ports.values():
            if port.escape_at and now - port.escape_at >= GUARD:
                port.escape_at = 0.0
                port.data = False
                self.counters["escapes"] += 1
                self.reply(port, "OK")

    def run(self) -> None:
        while True:
            deadlines = [t for t in (self.replug_at, self.register_at) if t]
            deadlines += [p.escape_at + GUARD for p in self.ports.values() if p.escape_at]
            timeout = None
            if self.storm_rate:
                timeout = 0.01
            if deadlines:
                timeout = max(0.0, min(timeout or 1.0, min(deadlines) - time.monotonic()))
            for key, _ in self.sel.select(timeout):
                kind, obj = key.data
                if kind == "listen":
                    conn, _ = obj.accept()
                    self.sel.register(conn, selectors.EVENT_READ, ("ctl", conn))
                elif kind == "ctl":
                    self.control(obj)
                elif kind == "port" and obj in self.ports:
                    self.readable(obj)
            if self.storm_rate:
                self.storm()
            self.timers()
            if self.replug_at and time.monotonic() >= self.replug_at:
                self.replug_at = 0.0
                self.plug()


if __name__ == "__main__":
    Modem(sys.argv[1], json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}).run()
