"""Typed modem errors: AT failures, the +CME ERROR (3GPP TS 27.007 clause 9.2) and +CMS ERROR
(3GPP TS 27.005 clause 3.2.5) tables, ports that fall silent or go away."""

from __future__ import annotations

from failberry.errors import FailberryError

# TS 27.007 9.2.1 (general errors) and 9.2.2 (GPRS/EPS errors). Only codes a data stick
# plausibly sends are named; any other code still raises CmeError with the number.
CME_ERRORS: dict[int, str] = {
    0: "phone failure",
    1: "no connection to phone",
    2: "phone-adaptor link reserved",
    3: "operation not allowed",
    4: "operation not supported",
    5: "PH-SIM PIN required",
    6: "PH-FSIM PIN required",
    7: "PH-FSIM PUK required",
    10: "SIM not inserted",
    11: "SIM PIN required",
    12: "SIM PUK required",
    13: "SIM failure",
    14: "SIM busy",
    15: "SIM wrong",
    16: "incorrect password",
    17: "SIM PIN2 required",
    18: "SIM PUK2 required",
    20: "memory full",
    21: "invalid index",
    22: "not found",
    23: "memory failure",
    24: "text string too long",
    25: "invalid characters in text string",
    26: "dial string too long",
    27: "invalid characters in dial string",
    30: "no network service",
    31: "network timeout",
    32: "network not allowed - emergency calls only",
    40: "network personalization PIN required",
    41: "network personalization PUK required",
    42: "network subset personalization PIN required",
    43: "network subset personalization PUK required",
    44: "service provider personalization PIN required",
    45: "service provider personalization PUK required",
    46: "corporate personalization PIN required",
    47: "corporate personalization PUK required",
    48: "hidden key required",
    49: "EAP method not supported",
    50: "incorrect parameters",
    100: "unknown",
    103: "illegal MS",
    106: "illegal ME",
    107: "GPRS services not allowed",
    111: "PLMN not allowed",
    112: "location area not allowed",
    113: "roaming not allowed in this location area",
    126: "missing or unknown APN",
    132: "service option not supported",
    133: "requested service option not subscribed",
    134: "service option temporarily out of order",
    148: "unspecified GPRS error",
    149: "PDP authentication failure",
    150: "invalid mobile class",
}

# Codes that mean "the SIM is absent or broken": retrying will not help until someone acts.
CME_SIM_MISSING = frozenset({10, 13, 15})
CME_INCORRECT_PASSWORD = 16
CME_SIM_BUSY = 14

# TS 27.005 3.2.5: the SMS errors; a data link never sends SMS, but a stray one must still
# parse into a typed error rather than a string.
CMS_ERRORS: dict[int, str] = {
    300: "ME failure",
    301: "SMS service of ME reserved",
    302: "operation not allowed",
    303: "operation not supported",
    304: "invalid PDU mode parameter",
    305: "invalid text mode parameter",
    310: "SIM not inserted",
    311: "SIM PIN required",
    312: "PH-SIM PIN required",
    313: "SIM failure",
    314: "SIM busy",
    315: "SIM wrong",
    316: "SIM PUK required",
    320: "memory failure",
    321: "invalid memory index",
    322: "memory full",
    330: "SMSC address unknown",
    331: "no network service",
    332: "network timeout",
    500: "unknown error",
}


class ModemError(FailberryError):
    """Something about the modem went wrong."""


class AtError(ModemError):
    """A command ended in a failure result code (`ERROR`, `NO CARRIER`, ...)."""

    def __init__(self, command: str, result: str, message: str | None = None) -> None:
        self.command = command
        self.result = result
        super().__init__(message or f"{command!r} failed: {result}")


class CmeError(AtError):
    """`+CME ERROR: <code>`, with the code and its TS 27.007 meaning."""

    def __init__(self, command: str, code: int, text: str | None = None) -> None:
        self.code = code
        self.meaning = text or CME_ERRORS.get(code, "unlisted error")
        super().__init__(command, f"+CME ERROR: {code}",
                         f"{command!r} failed: +CME ERROR {code} ({self.meaning})")


class CmsError(AtError):
    """`+CMS ERROR: <code>`, with the code and its TS 27.005 meaning."""

    def __init__(self, command: str, code: int, text: str | None = None) -> None:
        self.code = code
        self.meaning = text or CMS_ERRORS.get(code, "unlisted error")
        super().__init__(command, f"+CMS ERROR: {code}",
                         f"{command!r} failed: +CMS ERROR {code} ({self.meaning})")


class AtTimeout(ModemError):
    """The modem did not finish a command in time (a silent port)."""

    def __init__(self, command: str, timeout: float, port: str) -> None:
        self.command = command
        self.timeout = timeout
        self.port = port
        super().__init__(f"{port}: no final result for {command!r} within {timeout:g}s")


class PortGone(ModemError):
    """The serial port disappeared (unplugged, re-enumerated) or could not be opened."""

    def __init__(self, port: str, reason: str) -> None:
        self.port = port
        self.reason = reason
        super().__init__(f"{port}: {reason}")


class PppError(ModemError):
    """pppd could not be started or configured."""


class UsbPowerError(ModemError):
    """A USB recovery action could not be carried out (or was refused for safety)."""


def cme_from_verbose(text: str) -> int | None:
    """The code for a verbose `+CME ERROR: SIM not inserted` (AT+CMEE=2 sticks)."""
    wanted = text.strip().lower().replace("\u2011", "-")
    for code, meaning in CME_ERRORS.items():
        if meaning.lower() == wanted:
            return code
    return None
