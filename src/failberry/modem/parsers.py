"""Parsers for the information lines a data stick sends, each with the 3GPP TS 27.007 clause
it follows. They take one line (or the lines of one reply) and return frozen values; a line
they cannot read raises ValueError naming the line, never returns a half-filled value."""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Field:
    """One comma-separated value of an information line; `quoted` if it came in quotes."""

    text: str
    quoted: bool

    def as_int(self, base: int = 10) -> int | None:
        """The value as an integer, or None when empty."""
        return int(self.text, base) if self.text else None


def split_fields(payload: str) -> list[Field]:
    """Split `1,"00C3","A13B",7` on commas outside quotes (TS 27.007 4.1 string syntax)."""
    out: list[Field] = []
    cur: list[str] = []
    quoted = in_quotes = False
    for ch in payload:
        if ch == '"':
            in_quotes = not in_quotes
            quoted = True
        elif ch == "," and not in_quotes:
            out.append(Field("".join(cur).strip(), quoted))
            cur, quoted = [], False
        else:
            cur.append(ch)
    out.append(Field("".join(cur).strip(), quoted))
    return out


def pick(lines: Sequence[str], prefix: str, parser: Callable[[str], T]) -> T | None:
    """The first of `lines` with `prefix` that `parser` reads; line noise between a command
    and its answer (a torn `+CSQ:`) is skipped, not fatal."""
    for line in lines:
        if line.upper().startswith(prefix):
            try:
                return parser(line)
            except ValueError:
                continue
    return None


def payload_of(line: str, prefix: str) -> str:
    """What follows `+CSQ:` in `+CSQ: 20,99` (sticks differ on the space after the colon)."""
    head, sep, rest = line.partition(":")
    if not sep or head.strip().upper() != prefix.upper():
        raise ValueError(f"{line!r} is not a {prefix} line")
    return rest.strip()


# -- TS 27.007 8.5 Signal quality +CSQ: `+CSQ: <rssi>,<ber>`. rssi 0 is -113 dBm or less,
# 1 is -111, 2..30 step 2 dBm from -109 to -53, 31 is -51 or more, 99 not known.


@dataclass(frozen=True)
class Signal:
    """Signal quality: the raw rssi/ber and the rssi in dBm (None when the stick says 99)."""

    rssi: int
    ber: int
    dbm: int | None


def parse_csq(line: str) -> Signal:
    """`+CSQ: 17,99` -> Signal(rssi=17, ber=99, dbm=-79)."""
    f = split_fields(payload_of(line, "+CSQ"))
    try:
        rssi, ber = int(f[0].text), int(f[1].text) if len(f) > 1 and f[1].text else 99
    except ValueError:
        raise ValueError(f"{line!r}: rssi/ber are not numbers") from None
    if rssi == 99 or not 0 <= rssi <= 31:
        return Signal(rssi, ber, None)
    return Signal(rssi, ber, -113 + 2 * rssi)


# -- TS 27.007 7.2 +CREG (circuit switched), 10.1.20 +CGREG (GPRS), 10.1.22 +CEREG (EPS).
# Read reply:  +CREG: <n>,<stat>[,[<lac>],[<ci>],[<AcT>]]
# URC (n=1):   +CREG: <stat>
# URC (n=2):   +CREG: <stat>[,[<lac>],[<ci>],[<AcT>]]   (+CGREG adds <rac>, +CEREG has <tac>)
# lac/tac and ci are hexadecimal strings in quotes; some sticks drop the quotes.


class RegStat(enum.IntEnum):
    """<stat> of +CREG/+CGREG/+CEREG."""

    NOT_SEARCHING = 0
    HOME = 1
    SEARCHING = 2
    DENIED = 3
    UNKNOWN = 4
    ROAMING = 5
    SMS_ONLY_HOME = 6
    SMS_ONLY_ROAMING = 7
    EMERGENCY_ONLY = 8
    CSFB_NOT_PREFERRED_HOME = 9
    CSFB_NOT_PREFERRED_ROAMING = 10

    @property
    def registered(self) -> bool:
        """Registered on a network that carries data."""
        return self in (RegStat.HOME, RegStat.ROAMING, RegStat.CSFB_NOT_PREFERRED_HOME,
                        RegStat.CSFB_NOT_PREFERRED_ROAMING)


# TS 27.007 7.3 <AcT>.
ACCESS_TECH: dict[int, str] = {
    0: "GSM", 1: "GSM Compact", 2: "UTRAN", 3: "GSM/EGPRS", 4: "UTRAN/HSDPA",
    5: "UTRAN/HSUPA", 6: "UTRAN/HSPA", 7: "E-UTRAN", 8: "EC-GSM-IoT", 9: "E-UTRAN NB-S1",
    10: "E-UTRA-5GCN", 11: "NR-5GCN", 12: "NG-RAN", 13: "E-UTRA-NR",
}

REG_PREFIXES = ("+CREG", "+CGREG", "+CEREG")


@dataclass(frozen=True)
class Registration:
    """A network registration report, from a read reply (`n` set) or a URC (`n` None)."""

    kind: str  # "+CREG", "+CGREG" or "+CEREG"
    stat: RegStat
    n: int | None = None
    area: int | None = None  # LAC or TAC
    cell: int | None = None
    act: int | None = None

    @property
    def access_tech(self) -> str | None:
        """The access technology's name, when the stick said."""
        return None if self.act is None else ACCESS_TECH.get(self.act, f"AcT {self.act}")


def is_registration_read_reply(line: str) -> bool:
    """True for `+CREG: 2,1,...` (a read reply, <n> first), False for the URC `+CREG: 1,...`.

    Only a read reply has a second field that is a bare small decimal (<stat>); in a URC the
    second field is absent or the quoted hex <lac>."""
    try:
        fields = split_fields(line.partition(":")[2])
    except ValueError:
        return False
    return (len(fields) >= 2 and not fields[1].quoted
            and re.fullmatch(r"\d{1,2}", fields[1].text) is not None)


def parse_registration(line: str, read_reply: bool | None = None) -> Registration:
    """Parse any +CREG/+CGREG/+CEREG form; `read_reply` None guesses it from the shape."""
    kind = line.partition(":")[0].strip().upper()
    if kind not in REG_PREFIXES:
        raise ValueError(f"{line!r} is not a registration line")
    if read_reply is None:
        read_reply = is_registration_read_reply(line)
    f = split_fields(payload_of(line, kind))
    try:
        n = int(f.pop(0).text) if read_reply else None
        stat = RegStat(int(f[0].text))
        area = f[1].as_int(16) if len(f) > 1 else None
        cell = f[2].as_int(16) if len(f) > 2 else None
        act = f[3].as_int() if len(f) > 3 and not f[3].quoted else None
    except (ValueError, IndexError):
        raise ValueError(f"{line!r}: not a {kind} report TS 27.007 describes") from None
    return Registration(kind, stat, n, area, cell, act)


# -- TS 27.007 8.3 Enter PIN +CPIN: read gives `+CPIN: <code>`. "SIM not inserted" comes as
# +CME ERROR: 10, but some sticks (ZTE among them) answer `+CPIN: NOT INSERTED` or
# `+CPIN: NOT READY` instead.


class SimState(enum.StrEnum):
    """What +CPIN? says the SIM is waiting for."""

    READY = "READY"
    PIN = "SIM PIN"
    PUK = "SIM PUK"
    PIN2 = "SIM PIN2"
    PUK2 = "SIM PUK2"
    PH_SIM_PIN = "PH-SIM PIN"
    MISSING = "NOT INSERTED"
    NOT_READY = "NOT READY"
    ERROR = "ERROR"  # a plain ERROR to +CPIN?: sticks without working +CMEE say "no SIM" so
    OTHER = "OTHER"


_CPIN_ODD = {"SIM NOT INSERTED": SimState.MISSING, "NO SIM": SimState.MISSING,
             "SIM BUSY": SimState.NOT_READY, "SIM FAILURE": SimState.MISSING}


def parse_cpin(line: str) -> SimState:
    """`+CPIN: SIM PIN` -> SimState.PIN; unknown codes (PH-NET PIN ...) -> OTHER."""
    code = payload_of(line, "+CPIN").strip('"').strip().upper()
    try:
        return SimState(code)
    except ValueError:
        return _CPIN_ODD.get(code, SimState.OTHER)


# -- TS 27.007 7.3 PLMN selection +COPS: `+COPS: <mode>[,<format>,<oper>[,<AcT>]]`;
# format 0 long alphanumeric, 1 short, 2 numeric MCC+MNC.


@dataclass(frozen=True)
class Operator:
    """The operator the stick is on (`name` None when not registered)."""

    mode: int
    format: int | None = None
    name: str | None = None
    act: int | None = None


def parse_cops(line: str) -> Operator:
    """`+COPS: 0,0,"Vodafone UK",2` -> Operator(0, 0, "Vodafone UK", 2)."""
    f = split_fields(payload_of(line, "+COPS"))
    try:
        mode = int(f[0].text)
        fmt = f[1].as_int() if len(f) > 1 else None
        name = f[2].text if len(f) > 2 and f[2].text else None
        act = f[3].as_int() if len(f) > 3 else None
    except ValueError:
        raise ValueError(f"{line!r}: not a +COPS reply") from None
    return Operator(mode, fmt, name, act)


# -- TS 27.007 10.1.1 Define PDP context +CGDCONT:
# `+CGDCONT: <cid>,<PDP_type>,<APN>,<PDP_addr>,<d_comp>,<h_comp>[,...]`


@dataclass(frozen=True)
class PdpContext:
    """One defined PDP context."""

    cid: int
    pdp_type: str
    apn: str


def parse_cgdcont(lines: Sequence[str]) -> list[PdpContext]:
    """Every `+CGDCONT:` line of a read reply; other lines are ignored."""
    out = []
    for line in lines:
        if not line.upper().startswith("+CGDCONT"):
            continue
        f = split_fields(payload_of(line, "+CGDCONT"))
        try:
            out.append(PdpContext(int(f[0].text), f[1].text if len(f) > 1 else "",
                                  f[2].text if len(f) > 2 else ""))
        except ValueError:
            raise ValueError(f"{line!r}: not a +CGDCONT reply") from None
    return out


# -- TS 27.007 5.1 +CGMI, 5.2 +CGMM, 5.3 +CGMR, 5.4 +CGSN: the reply is free text on its own
# line(s); some sticks prefix it with the command name (`+CGMI: ZTE CORPORATION`).


def parse_identity(command: str, lines: Sequence[str]) -> str:
    """The free-text answer of +CGMI/+CGMM/+CGMR/+CGSN, without any echoed prefix."""
    prefix = command.upper().removeprefix("AT")
    text = [ln.strip() for ln in lines if ln.strip()]
    if not text:
        raise ValueError(f"{command}: empty identity reply")
    first = text[0]
    if first.upper().startswith(prefix + ":"):
        first = first.partition(":")[2].strip()
    return first.strip('"')


# -- Vendor URCs. ZTE: `+ZPAS: "<network>","<service>"` (e.g. "UMTS","CS_PS"); Huawei/ZTE
# `^MODE: <sys_mode>[,<sys_submode>]`. They only refine the access technology shown.

_HUAWEI_MODE = {0: None, 1: "AMPS", 2: "CDMA", 3: "GSM", 4: "HDR", 5: "WCDMA", 6: "GPS",
                7: "GSM/WCDMA", 8: "CDMA/HDR", 9: "TD-SCDMA", 15: "TD-SCDMA", 17: "LTE"}


def parse_vendor_access_tech(line: str) -> str | None:
    """Access technology named by `+ZPAS:` or `^MODE:`; None when it says "no service"."""
    head = line.partition(":")[0].strip().upper()
    if head == "+ZPAS":
        f = split_fields(payload_of(line, "+ZPAS"))
        name = f[0].text
        return None if name.upper() in ("NO SERVICE", "LIMITED SERVICE", "") else name
    if head == "^MODE":
        f = split_fields(payload_of(line, "^MODE"))
        try:
            return _HUAWEI_MODE.get(int(f[0].text), f"mode {f[0].text}")
        except ValueError:
            raise ValueError(f"{line!r}: not a ^MODE report") from None
    raise ValueError(f"{line!r} is not a vendor access-technology URC")
