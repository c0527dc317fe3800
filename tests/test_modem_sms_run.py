"""`failberry run --no-network` itself with SMS alerts and no `alerts.sms_port`: the SMS go
through the modem part's monitoring AT port (the fake stick's ttyUSB1) while the stand-in
pppd holds ttyUSB2. A `status` SMS from the allowlisted number, announced by +CMTI, is
answered; the stranger's is deleted unanswered."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from conftest import free_port
from test_modem_run import modem, output, stick, supervisor, write_config

pytestmark = [pytest.mark.root]

ADMIN = "+491701234567"
STRANGER = "+15550001111"


@pytest.mark.timeout(90)
def test_failberry_run_answers_a_status_sms_over_the_monitoring_port(tmp_path: Path) -> None:
    with stick(tmp_path, {}) as st:
        port = free_port()
        cfg = write_config(st, "", ["true"])
        with cfg.open("a") as f:
            f.write(f'\n[alerts]\nsms_to = ["{ADMIN}"]\nsms_commands_from = ["{ADMIN}"]\n'
                    f'hooks_dir = "{tmp_path / "hooks"}"\n')
        with supervisor(cfg, port) as proc:
            deadline = time.monotonic() + 20
            while modem(port).get("state") != "connected":
                assert proc.poll() is None, output(proc)
                assert time.monotonic() < deadline, output(proc)
                time.sleep(0.05)
            assert st.ppp0_up()
            deadline = time.monotonic() + 5
            while "AT+CNMI=2,1,0,0,0" not in st.ctl(op="get")["log"]:
                assert time.monotonic() < deadline, output(proc)
                time.sleep(0.05)
            st.ctl(op="sms", **{"from": STRANGER, "text": "status"})
            st.ctl(op="sms", **{"from": ADMIN, "text": "status"})
            t0 = time.monotonic()
            while not st.ctl(op="get")["sms_sent"]:
                assert time.monotonic() - t0 < 5.0, output(proc)
                time.sleep(0.05)
            took = time.monotonic() - t0
            time.sleep(0.5)
            got = st.ctl(op="get")
            [answer] = got["sms_sent"]
            assert answer["to"] == ADMIN and answer["text"].startswith("failberry "), answer
            assert got["lost_typeahead"] == 0
            assert got["sms_store"] == {} and sorted(got["sms_deleted"]) == [1, 2]
            assert modem(port)["state"] == "connected" and st.ppp0_up()
            print(f"+CMTI to the answer's AT+CMGS: {took * 1000:.0f} ms")
        log = output(proc)
        assert "ignoring SMS from " + STRANGER in log, log
