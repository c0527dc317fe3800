"""Transcript tests: real-format lines, including the odd ones sticks send, through each
parser, and the error tables as typed errors."""

from __future__ import annotations

import pytest

from failberry.modem.at import Kind, LineSplitter, classify, final_error, response_prefix
from failberry.modem.errors import AtError, CmeError, CmsError
from failberry.modem.parsers import (
    Operator,
    PdpContext,
    Registration,
    RegStat,
    SimState,
    parse_cgdcont,
    parse_cops,
    parse_cpin,
    parse_csq,
    parse_identity,
    parse_registration,
    parse_vendor_access_tech,
)


@pytest.mark.parametrize(("line", "rssi", "ber", "dbm"), [
    ("+CSQ: 17,99", 17, 99, -79),
    ("+CSQ: 0,0", 0, 0, -113),
    ("+CSQ: 31,7", 31, 7, -51),
    ("+CSQ: 99,99", 99, 99, None),  # not known or not detectable
    ("+CSQ:15,99", 15, 99, -83),  # ZTE firmware without the space
    ("+CSQ: 2 , 99", 2, 99, -109),
])
def test_csq(line: str, rssi: int, ber: int, dbm: int | None) -> None:
    sig = parse_csq(line)
    assert (sig.rssi, sig.ber, sig.dbm) == (rssi, ber, dbm)


def test_csq_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="CSQ"):
        parse_csq("+CSQ: ab,cd")
    with pytest.raises(ValueError, match="not a"):
        parse_csq("+CREG: 1")


@pytest.mark.parametrize(("line", "want"), [
    # read replies, <n> first
    ("+CREG: 0,1", Registration("+CREG", RegStat.HOME, 0)),
    ('+CREG: 2,1,"00C3","0000A13B",2',
     Registration("+CREG", RegStat.HOME, 2, 0xC3, 0xA13B, 2)),
    ('+CGREG: 2,5,"1A2B","01C2D3E4",6,"01"',
     Registration("+CGREG", RegStat.ROAMING, 2, 0x1A2B, 0x1C2D3E4, 6)),
    ('+CEREG: 2,1,"3A9C","0A1B2C3D",7',
     Registration("+CEREG", RegStat.HOME, 2, 0x3A9C, 0xA1B2C3D, 7)),
    ("+CREG: 1,3", Registration("+CREG", RegStat.DENIED, 1)),
    ("+CGREG: 2,2", Registration("+CGREG", RegStat.SEARCHING, 2)),
    # URCs
    ("+CREG: 1", Registration("+CREG", RegStat.HOME)),
    ("+CREG: 3", Registration("+CREG", RegStat.DENIED)),
    ('+CREG: 5,"00C3","0000A13B",2',
     Registration("+CREG", RegStat.ROAMING, None, 0xC3, 0xA13B, 2)),
    ('+CGREG: 1,"00C3","0000A13B"', Registration("+CGREG", RegStat.HOME, None, 0xC3, 0xA13B)),
    ('+CEREG: 1,"3A9C","0A1B2C3D",7',
     Registration("+CEREG", RegStat.HOME, None, 0x3A9C, 0xA1B2C3D, 7)),
    # odd: unquoted hex LAC (some Huawei firmware), empty optional fields
    ("+CREG: 1,00C3,0000A13B", Registration("+CREG", RegStat.HOME, None, 0xC3, 0xA13B)),
    ('+CREG: 2,1,,,7', Registration("+CREG", RegStat.HOME, 2, None, None, 7)),
])
def test_registration_forms(line: str, want: Registration) -> None:
    assert parse_registration(line) == want


def test_registration_helpers() -> None:
    reg = parse_registration('+CEREG: 2,1,"3A9C","0A1B2C3D",7')
    assert reg.stat.registered and reg.access_tech == "E-UTRAN"
    assert not RegStat.DENIED.registered and not RegStat.SEARCHING.registered
    with pytest.raises(ValueError):
        parse_registration("+CREG: 42")
    with pytest.raises(ValueError):
        parse_registration("+CSQ: 1,2")


@pytest.mark.parametrize(("line", "want"), [
    ("+CPIN: READY", SimState.READY),
    ("+CPIN: SIM PIN", SimState.PIN),
    ("+CPIN: SIM PUK", SimState.PUK),
    ("+CPIN: SIM PIN2", SimState.PIN2),
    ("+CPIN: PH-SIM PIN", SimState.PH_SIM_PIN),
    ('+CPIN: "READY"', SimState.READY),
    ("+CPIN:READY", SimState.READY),
    ("+CPIN: NOT INSERTED", SimState.MISSING),  # ZTE instead of +CME ERROR: 10
    ("+CPIN: SIM NOT INSERTED", SimState.MISSING),
    ("+CPIN: NOT READY", SimState.NOT_READY),
    ("+CPIN: PH-NET PIN", SimState.OTHER),
])
def test_cpin(line: str, want: SimState) -> None:
    assert parse_cpin(line) is want


@pytest.mark.parametrize(("line", "want"), [
    ('+COPS: 0,0,"Vodafone UK",2', Operator(0, 0, "Vodafone UK", 2)),
    ('+COPS: 0,2,"23415",7', Operator(0, 2, "23415", 7)),
    ("+COPS: 0", Operator(0)),
    ('+COPS: 1,0,"T-Mobile D"', Operator(1, 0, "T-Mobile D")),
    ('+COPS: 0,0,"O2 - UK, Ltd",2', Operator(0, 0, "O2 - UK, Ltd", 2)),  # comma in quotes
])
def test_cops(line: str, want: Operator) -> None:
    assert parse_cops(line) == want


def test_cgdcont() -> None:
    lines = ['+CGDCONT: 1,"IP","internet","0.0.0.0",0,0',
             '+CGDCONT: 2,"IPV4V6","ims","",0,0,0,0',
             "junk"]
    assert parse_cgdcont(lines) == [PdpContext(1, "IP", "internet"),
                                    PdpContext(2, "IPV4V6", "ims")]


@pytest.mark.parametrize(("command", "lines", "want"), [
    ("AT+CGMI", ["ZTE CORPORATION"], "ZTE CORPORATION"),
    ("AT+CGMI", ["+CGMI: ZTE INCORPORATED"], "ZTE INCORPORATED"),
    ("AT+CGMM", ["MF180"], "MF180"),
    ("AT+CGSN", ["", "866666012345678"], "866666012345678"),
    ("AT+CGMR", ['+CGMR: "BD_MF180V1.0.0B01"'], "BD_MF180V1.0.0B01"),
])
def test_identity(command: str, lines: list[str], want: str) -> None:
    assert parse_identity(command, lines) == want


def test_vendor_urcs() -> None:
    assert parse_vendor_access_tech('+ZPAS: "UMTS","CS_PS"') == "UMTS"
    assert parse_vendor_access_tech('+ZPAS: "NO SERVICE","CS_ONLY"') is None
    assert parse_vendor_access_tech("^MODE: 5,4") == "WCDMA"
    assert parse_vendor_access_tech("^MODE: 3,3") == "GSM"


@pytest.mark.parametrize(("line", "cls", "code", "meaning"), [
    ("+CME ERROR: 10", CmeError, 10, "SIM not inserted"),
    ("+CME ERROR: 16", CmeError, 16, "incorrect password"),
    ("+CME ERROR: 30", CmeError, 30, "no network service"),
    ("+CME ERROR: SIM not inserted", CmeError, 10, "SIM not inserted"),  # AT+CMEE=2 sticks
    ("+CME ERROR: 999", CmeError, 999, "unlisted error"),
    ("+CMS ERROR: 310", CmsError, 310, "SIM not inserted"),
])
def test_error_tables(line: str, cls: type[CmeError | CmsError], code: int,
                      meaning: str) -> None:
    err = final_error("AT+CPIN?", line)
    assert isinstance(err, cls)
    assert (err.code, err.meaning) == (code, meaning)
    assert str(code) in str(err) and "AT+CPIN?" in str(err)


def test_plain_error_is_an_aterror() -> None:
    err = final_error("ATD*99#", "NO CARRIER")
    assert type(err) is AtError and err.result == "NO CARRIER"


@pytest.mark.parametrize(("line", "pending", "kind"), [
    ("AT+CSQ", "AT+CSQ", Kind.ECHO),
    ("+CSQ: 17,99", "AT+CSQ", Kind.INFO),
    ("OK", "AT+CSQ", Kind.FINAL),
    ("+CME ERROR: 10", "AT+CPIN?", Kind.FINAL),
    ("CONNECT 7200000", "ATD*99#", Kind.FINAL),
    ("+CREG: 1", "AT+CSQ", Kind.URC),
    ("+CREG: 1", "AT+CREG?", Kind.URC),  # the URC form, while the read is waiting
    ('+CREG: 1,"00C3","0000A13B",2', "AT+CREG?", Kind.URC),
    ('+CREG: 2,1,"00C3","0000A13B",2', "AT+CREG?", Kind.INFO),
    ("RING", "AT+CSQ", Kind.URC),
    ("^MODE: 5,4", "AT+CSQ", Kind.URC),
    ('+ZPAS: "UMTS","CS_PS"', None, Kind.URC),
    ("ZTE CORPORATION", "AT+CGMI", Kind.INFO),
    ("ZTE CORPORATION", None, Kind.NOISE),
    ("OK", None, Kind.NOISE),
    ("NO CARRIER", None, Kind.URC),
])
def test_classifier(line: str, pending: str | None, kind: Kind) -> None:
    assert classify(line, pending) is kind


def test_response_prefix() -> None:
    assert response_prefix("AT+CREG?") == "+CREG"
    assert response_prefix('at+cpin="1234"') == "+CPIN"
    assert response_prefix("AT^SYSINFO") == "^SYSINFO"
    assert response_prefix("ATI") is None


def test_splitter_odd_bytes() -> None:
    sp = LineSplitter()
    assert sp.feed(b"AT+CSQ\r\r\n+CS") == ["AT+CSQ"]  # echo, then a partial line
    assert sp.feed(b"Q: 17,99\r\n\r\nOK\r\n") == ["+CSQ: 17,99", "OK"]
    assert sp.feed(b"\n\r+CREG: 1\n\rRING\r") == ["+CREG: 1", "RING"]  # \n\r and bare \r
    assert sp.feed(b"\x00\x00O\x00K\r\n") == ["OK"]  # NULs
    out = sp.feed(b"\xff\xfe+ZPAS: \"UMTS\"\r\n")
    assert out == ['\ufffd\ufffd+ZPAS: "UMTS"']  # not UTF-8: replaced, no exception
    assert sp.feed(b"x" * 5000) == [] and sp.dropped == 5000  # endless junk is dropped
    assert sp.feed(b"OK\r\n") == ["OK"]


def test_registration_urc_in_both_shapes() -> None:
    # TS 27.007 says the URC is `+CREG: <stat>[,...]`; some firmware sends the read reply's
    # shape `+CREG: <n>,<stat>[,...]` unsolicited after AT+CREG=2. Both are read right.
    plain = parse_registration('+CREG: 1,"1A2B","0003C4D5",2')
    with_n = parse_registration('+CREG: 2,1,"1A2B","0003C4D5",2')
    assert (plain.n, plain.stat, plain.area, plain.act) == (None, RegStat.HOME, 0x1A2B, 2)
    assert (with_n.n, with_n.stat, with_n.area, with_n.act) == (2, RegStat.HOME, 0x1A2B, 2)
    assert parse_registration("+CGREG: 2,5").stat is RegStat.ROAMING
    assert parse_registration("+CREG: 5").stat is RegStat.ROAMING
