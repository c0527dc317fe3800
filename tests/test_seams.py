"""[paths] and [modem] enabled without root: where the parts put their files, how `failberry
status` finds the supervisor (supervisor.json in run_dir), and no modem part when disabled."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from failberry import statuscmd
from failberry.bus import AddressChanged, Bus
from failberry.config import parse
from failberry.dyndns.addresses import AddressBook, Chooser
from failberry.parts import build_first
from failberry.runfile import RunFile
from failberry.status import Status

BASE = '[modem]\napn = "internet"\n'


def test_modem_disabled_builds_no_modem_part_and_says_so() -> None:
    from failberry.modem.part import ModemPart

    status = Status()
    cfg = parse(BASE + "enabled = false\n")
    parts = build_first(cfg, status, Bus(), manage_network=False)
    assert not [p for p in parts if isinstance(p, ModemPart)]
    assert status.parts["modem"].state == "not managed"
    assert status.stale_parts() == []
    assert [p for p in build_first(parse(BASE), Status(), Bus(), manage_network=False)
            if isinstance(p, ModemPart)]
    lines = statuscmd.render({"modem": {"state": "not managed",
                                        "reason": "modem.enabled = false: something else"}})
    assert "modem: not managed, modem.enabled = false: something else" in lines


def test_parts_put_their_files_under_the_configured_paths(tmp_path: Path) -> None:
    from failberry.dyndns.part import build as build_dyndns
    from failberry.net.part import build
    from failberry.parts import Seams

    cfg = parse(BASE + f'[paths]\nrun_dir = "{tmp_path}/run"\nstate_dir = "{tmp_path}/st"\n'
                '[dyndns]\nprovider = "dyndns2"\nname = "h.example.org"\n[dyndns.dyndns2]\n'
                'url = "https://x.example/nic/update"\nusername = "u"\npassword = "p"\n')
    net = build(cfg, Seams(Status(), Bus()))
    assert net.sysctls.path == tmp_path / "run" / "sysctl-saved.json"
    assert net.usage.path == tmp_path / "st" / "mobile-usage.json"
    dyn = build_dyndns(cfg, Seams(Status(), Bus()))
    assert dyn.state is not None and dyn.state.path == tmp_path / "st" / "dyndns-state.json"


def test_status_finds_the_supervisor_running_this_config(tmp_path: Path) -> None:
    cfg = tmp_path / "a.toml"
    cfg.write_text(BASE + f'[health]\nport = 9100\n[paths]\nrun_dir = "{tmp_path}/run"\n')
    assert statuscmd.status_url(cfg) == "http://127.0.0.1:9100/status"
    RunFile(tmp_path / "run").write("0.0.0.0", 43210, cfg)
    assert statuscmd.status_url(cfg) == "http://127.0.0.1:43210/status"
    # Another config's file in the same directory, or a dead pid: not trusted.
    other = tmp_path / "b.toml"
    other.write_text(cfg.read_text())
    assert statuscmd.status_url(other) == "http://127.0.0.1:9100/status"
    data = json.loads((tmp_path / "run" / "supervisor.json").read_text())
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    data["pid"] = int(dead.stdout)
    (tmp_path / "run" / "supervisor.json").write_text(json.dumps(data))
    assert statuscmd.status_url(cfg) == "http://127.0.0.1:9100/status"
    # remove() leaves a file that is not ours alone.
    RunFile(tmp_path / "run").remove()
    assert (tmp_path / "run" / "supervisor.json").exists()
    data["pid"] = os.getpid()
    (tmp_path / "run" / "supervisor.json").write_text(json.dumps(data))
    RunFile(tmp_path / "run").remove()
    assert not (tmp_path / "run" / "supervisor.json").exists()


def test_address_choice() -> None:
    book = AddressBook()
    for ev in (AddressChanged("eth1", "203.0.113.2"), AddressChanged("eth1", "fe80::1", 6),
               AddressChanged("eth1", "2001:db8::2/64", 6),
               AddressChanged("eth1", "2001:db8::3", 6),
               AddressChanged("ppp0", "100.64.0.2"), AddressChanged("ppp0", "2001:db8:2::2", 6)):
        book.add(ev)
    ups = [("wired", "eth1"), ("mobile", "ppp0")]
    assert Chooser("", ups, network=True).choose(book, 6)[0] is None  # no active uplink yet
    assert Chooser("", ups, network=True, active="mobile").choose(book, 6)[0] == "2001:db8:2::2"
    assert Chooser("", ups, network=True, active="wired").choose(book, 6)[0] == "2001:db8::2"
    assert Chooser("", ups, network=False).choose(book, 4)[0] == "203.0.113.2"
    assert Chooser("ppp0", ups).choose(book, 4)[0] == "100.64.0.2"
    book.reset([AddressChanged("ppp0", "100.64.0.3")])
    assert Chooser("", ups, network=False).choose(book, 4)[0] == "100.64.0.3"


def test_only_namespaces_of_dead_test_processes_are_stale() -> None:
    from conftest import stale_test_namespaces
    alive, dead = os.getpid(), 2 ** 22 + 7  # above pid_max's default: never a live pid
    names = [f"fb-modem-{alive}-1", f"fb-modem-{dead}-3", f"fb-run-{dead}-abc123",
             f"fb-health-{dead}", "fb-modem-x-1", "mynamespace", f"other-{dead}"]
    assert stale_test_namespaces(names) == [f"fb-modem-{dead}-3", f"fb-run-{dead}-abc123",
                                            f"fb-health-{dead}"]
