"""SMS text encodings (3GPP TS 23.038) and SMS-SUBMIT PDUs (TS 23.040 9.2.2.2): which text
fits text mode, the GSM 7-bit alphabet with its escape table, UCS2, and concatenated
messages (an 8-bit-reference user data header) for text longer than one SMS."""

from __future__ import annotations

import re
from dataclasses import dataclass

# TS 23.038 6.2.1: the default alphabet, position = septet value.
GSM7 = ("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
        "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")
GSM7_EXT = {"\f": 0x0A, "^": 0x14, "{": 0x28, "}": 0x29, "\\": 0x2F, "[": 0x3C, "~": 0x3D,
            "]": 0x3E, "|": 0x40, "€": 0x65}
_GSM7_INDEX = {c: i for i, c in enumerate(GSM7) if c != "\x1b"}

# Text mode with AT+CSCS="IRA" (ASCII): only characters every stick maps to the default
# alphabet the same way; anything else goes by PDU.
_TEXT_MODE_SAFE = re.compile(r"^[A-Za-z0-9 !\"#%&'()*+,\-./:;<=>?@$_\n]*$")

SINGLE_GSM7, PART_GSM7 = 160, 153  # septets; a part loses 7 to the header
SINGLE_UCS2, PART_UCS2 = 70, 67  # UTF-16 code units
MAX_PARTS = 6  # an alert longer than this is cut


def text_mode_ok(text: str) -> bool:
    """Whether `text` can go as one SMS in text mode (ASCII the default alphabet holds)."""
    return len(text) <= SINGLE_GSM7 and bool(_TEXT_MODE_SAFE.match(text))


def gsm7_septets(text: str) -> list[int] | None:
    """The septets for `text` in the default alphabet, or None if a character is missing."""
    out: list[int] = []
    for c in text:
        if c in _GSM7_INDEX:
            out.append(_GSM7_INDEX[c])
        elif c in GSM7_EXT:
            out += [0x1B, GSM7_EXT[c]]
        else:
            return None
    return out


def _split_septets(septets: list[int], size: int) -> list[list[int]]:
    parts, i = [], 0
    while i < len(septets):
        end = min(i + size, len(septets))
        if end < len(septets) and septets[end - 1] == 0x1B:
            end -= 1  # never split an escape from the character it escapes
        parts.append(septets[i:end])
        i = end
    return parts


def _split_ucs2(units: bytes, size: int) -> list[bytes]:
    parts, i = [], 0
    while i < len(units):
        end = min(i + 2 * size, len(units))
        if end < len(units) and 0xD8 <= units[end - 2] <= 0xDB:
            end -= 2  # never split a surrogate pair
        parts.append(units[i:end])
        i = end
    return parts


def pack_septets(septets: list[int], fill_bits: int = 0) -> bytes:
    """TS 23.038 6.1.2.1.1: septets packed LSB first after `fill_bits` zero bits."""
    acc, pos = 0, fill_bits
    for s in septets:
        acc |= (s & 0x7F) << pos
        pos += 7
    return acc.to_bytes((pos + 7) // 8, "little")


def unpack_septets(data: bytes, count: int, fill_bits: int = 0) -> list[int]:
    """The inverse of `pack_septets`."""
    acc = int.from_bytes(data, "little")
    return [(acc >> (fill_bits + 7 * i)) & 0x7F for i in range(count)]


def gsm7_decode(septets: list[int]) -> str:
    """Septets back to text."""
    ext = {v: k for k, v in GSM7_EXT.items()}
    out, esc = [], False
    for s in septets:
        if esc:
            out.append(ext.get(s, " "))
            esc = False
        elif s == 0x1B:
            esc = True
        else:
            out.append(GSM7[s])
    return "".join(out)


def address(number: str) -> bytes:
    """TS 23.040 9.1.2.5: digit count, type of number (international or unknown), BCD."""
    digits = number.lstrip("+")
    toa = 0x91 if number.startswith("+") else 0x81
    padded = digits + ("F" if len(digits) % 2 else "")
    swapped = "".join(padded[i + 1] + padded[i] for i in range(0, len(padded), 2))
    return bytes([len(digits), toa]) + bytes.fromhex(swapped)


@dataclass(frozen=True)
class Pdu:
    """One SMS-SUBMIT: the hex for AT+CMGS (with an empty SMSC field) and its TPDU length."""

    hex: str
    length: int  # octets, not counting the SMSC field: the AT+CMGS=<length> argument


def submit_pdus(number: str, text: str, ref: int) -> list[Pdu]:
    """The SMS-SUBMIT PDUs for `text` to `number`: GSM 7-bit if it fits the alphabet, else
    UCS2; several parts with a concatenation header (reference `ref`) if it is long."""
    septets = gsm7_septets(text)
    parts7: list[list[int]] = []
    parts16: list[bytes] = []
    if septets is not None:
        dcs = 0x00
        parts7 = ([septets] if len(septets) <= SINGLE_GSM7
                  else _split_septets(septets, PART_GSM7))[:MAX_PARTS]
        total = len(parts7)
    else:
        dcs = 0x08
        units = text.encode("utf-16-be")
        parts16 = ([units] if len(units) <= 2 * SINGLE_UCS2
                   else _split_ucs2(units, PART_UCS2))[:MAX_PARTS]
        total = len(parts16)
    out = []
    for i in range(total):
        udh = bytes([0x05, 0x00, 0x03, ref & 0xFF, total, i + 1]) if total > 1 else b""
        if dcs == 0x00:
            body = parts7[i]
            # The header is octets; the text starts on the next septet boundary after it.
            fill = (7 - (len(udh) * 8) % 7) % 7 if udh else 0
            ud = udh + pack_septets(body, fill)
            udl = (len(udh) * 8 + fill) // 7 + len(body)  # counted in septets
        else:
            ud = udh + parts16[i]
            udl = len(ud)
        first = 0x01 | (0x40 if udh else 0)  # SMS-SUBMIT, no validity period, UDHI
        tpdu = (bytes([first, 0x00]) + address(number) + bytes([0x00, dcs, udl]) + ud)
        out.append(Pdu("00" + tpdu.hex().upper(), len(tpdu)))
    return out


def decode_ucs2_hex(text: str) -> str:
    """A text-mode field in AT+CSCS="UCS2" (hex of UTF-16BE); as is if it is not that."""
    t = text.strip()
    if len(t) % 4 == 0 and t and re.fullmatch(r"[0-9A-Fa-f]+", t):
        try:
            return bytes.fromhex(t).decode("utf-16-be")
        except UnicodeDecodeError:
            return text
    return text
