"""The one /proc/sys adapter, on a plain directory tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from failberry.procsys import ProcSys, SysctlError


def test_dotted_and_slashed_keys(tmp_path: Path) -> None:
    vlan = tmp_path / "net/ipv4/conf/eth0.100"
    vlan.mkdir(parents=True)
    (vlan / "rp_filter").write_text("0\n")
    (tmp_path / "kernel").mkdir()
    (tmp_path / "kernel/panic").write_text("0\n")
    proc = ProcSys(tmp_path)
    proc.write("net/ipv4/conf/eth0.100/rp_filter", "2")  # the interface keeps its dot
    proc.write("kernel.panic", "10")
    assert proc.read("net/ipv4/conf/eth0.100/rp_filter") == "2"
    assert proc.read("kernel.panic") == "10"
    assert proc.read("net/ipv4/conf/eth9/rp_filter") is None


def test_a_missing_key_is_an_error_not_a_new_file(tmp_path: Path) -> None:
    with pytest.raises(SysctlError, match=r"kernel\.nope"):
        ProcSys(tmp_path).write("kernel.nope", "1")
    assert not (tmp_path / "kernel").exists()
