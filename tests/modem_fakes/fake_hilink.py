"""A fake HiLink stick's web API (Huawei E3372h-320 shaped): the tests' own program, run in
the stick's network namespace.

    python fake_hilink.py DIR ADDRESS

Serves http://ADDRESS:80/api/...: `/api/webserver/SesTokInfo` hands out a session (cookie
`SessionID`) and a token; every other call needs a live session (else `<error><code>125002`)
and every POST the current token in `__RequestVerificationToken` (else 125003); a POST's
answer carries the next token in that header, as the real sticks' do. Orders on the Unix
socket DIR/hilink.ctl, one JSON object a line:

    {"op": "hang"}      the API stops answering (requests are held, never answered)
    {"op": "revive"}    it answers again (a fresh boot: sessions forgotten, data switch off)
    {"op": "expire"}    every session and token is forgotten (as after the stick's timeout)
    {"op": "set", "key": "connection", "value": "902"}
    {"op": "get"}       counters as JSON
"""

from __future__ import annotations

import json
import secrets
import socketserver
import sys
import threading
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOKEN = "__RequestVerificationToken"


class Stick:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sessions: set[str] = set()
        self.tokens: set[str] = set()
        self.alive = threading.Event()
        self.alive.set()
        self.s: dict[str, Any] = {"connection": None}
        self.counters: dict[str, int] = {"handshakes": 0, "dataswitch_on": 0,
                                         "dataswitch_off": 0, "reboots": 0, "bad_session": 0,
                                         "bad_token": 0, "requests": 0}
        self.dataswitch = False

    def new_token(self) -> str:
        token = secrets.token_hex(16)
        self.tokens.add(token)
        return token

    def forget(self) -> None:
        self.sessions.clear()
        self.tokens.clear()


STICK = Stick()


def error(code: int) -> str:
    return (f'<?xml version="1.0" encoding="UTF-8"?><error><code>{code}</code>'
            "<message></message></error>")


def response(**fields: object) -> str:
    body = "".join(f"<{k}>{v}</{k}>" for k, v in fields.items())
    return f'<?xml version="1.0" encoding="UTF-8"?><response>{body}</response>'


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def send(self, text: str, token: str | None = None) -> None:
        data = text.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(data)))
        if token:
            self.send_header(TOKEN, token)
        self.end_headers()
        self.wfile.write(data)

    def session_ok(self) -> bool:
        cookie = self.headers.get("Cookie", "")
        sid = cookie.partition("SessionID=")[2].split(";")[0]
        return sid in STICK.sessions

    def do_GET(self) -> None:
        STICK.alive.wait()
        st = STICK
        with st.lock:
            st.counters["requests"] += 1
            if self.path == "/api/webserver/SesTokInfo":
                st.counters["handshakes"] += 1
                sid = secrets.token_hex(16)
                st.sessions.add(sid)
                self.send(response(SesInfo=f"SessionID={sid}", TokInfo=st.new_token()))
                return
            if not self.session_ok():
                st.counters["bad_session"] += 1
                self.send(error(125002))
                return
            connected = st.s["connection"] or ("901" if st.dataswitch else "902")
            pages = {
                "/api/device/information": response(DeviceName="E3372h-320",
                                                    Imei="866666012345678"),
                "/api/pin/status": response(SimState=257, PinOptState=258),
                "/api/monitoring/status": response(
                    ConnectionStatus=connected, SignalIcon=4, CurrentNetworkType=19,
                    CurrentNetworkTypeEx=101, ServiceStatus=2, SimStatus=1, RoamingStatus=0,
                    WanIPAddress="100.71.3.9"),
                "/api/device/signal": response(rssi="-67dBm", rsrp="-95dBm", rsrq="-9dB",
                                               sinr="11dB", mode=7),
                "/api/net/current-plmn": response(State=0, FullName="Vodafone UK",
                                                  ShortName="voda UK", Numeric=23415, Rat=7),
            }
            self.send(pages.get(self.path, error(100002)))

    def do_POST(self) -> None:
        STICK.alive.wait()
        st = STICK
        body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
        with st.lock:
            st.counters["requests"] += 1
            if not self.session_ok():
                st.counters["bad_session"] += 1
                self.send(error(125002))
                return
            token = self.headers.get(TOKEN, "")
            if token not in st.tokens:
                st.counters["bad_token"] += 1
                self.send(error(125003))
                return
            st.tokens.discard(token)  # one-time tokens; the next one comes in the answer
            fields = {c.tag: (c.text or "") for c in ET.fromstring(body)}
            if self.path == "/api/dialup/mobile-dataswitch":
                st.dataswitch = fields.get("dataswitch") == "1"
                st.counters["dataswitch_on" if st.dataswitch else "dataswitch_off"] += 1
            elif self.path == "/api/device/control" and fields.get("Control") == "1":
                st.counters["reboots"] += 1
                st.dataswitch = False
            else:
                self.send(error(100002), st.new_token())
                return
            self.send('<?xml version="1.0" encoding="UTF-8"?><response>OK</response>',
                      st.new_token())


class Control(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        for raw in self.rfile:
            order = json.loads(raw)
            op, out = order["op"], "ok"
            with STICK.lock:
                if op == "hang":
                    STICK.alive.clear()
                elif op == "revive":
                    STICK.forget()
                    STICK.dataswitch = False
                    STICK.alive.set()
                elif op == "expire":
                    STICK.forget()
                elif op == "set":
                    STICK.s[order["key"]] = order["value"]
                elif op == "get":
                    out = {**STICK.counters, "dataswitch": STICK.dataswitch}
            self.wfile.write((json.dumps(out) + "\n").encode())


def main() -> None:
    directory, address = sys.argv[1], sys.argv[2]
    ctl = socketserver.ThreadingUnixStreamServer(f"{directory}/hilink.ctl", Control)
    threading.Thread(target=ctl.serve_forever, daemon=True).start()
    server = ThreadingHTTPServer((address, 80), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
