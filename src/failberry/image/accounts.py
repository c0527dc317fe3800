"""The account databases (/etc/passwd, shadow, group, gshadow) as text, edited without running
`useradd` in the target: the image is for another architecture and may not be booted yet.

Pure: parse the four files, change them, render them back. Lines we do not touch keep their
order and spelling, so a customised image differs from its base only where it must.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from failberry.errors import FailberryError

FIRST_UID = 1000
LAST_UID = 59999
# Groups a router admin needs: sudo, logs (adm, systemd-journal), the modem's serial ports
# (dialout), network tools (netdev), USB sticks (plugdev). Only those the image has are used.
ADMIN_GROUPS = ("adm", "dialout", "netdev", "plugdev", "sudo", "systemd-journal", "users")
# `*` rather than `!`: both mean "no password can match", but with `UsePAM yes` OpenSSH
# treats a field starting with `!` as a locked account and refuses key logins too.
NO_PASSWORD = "*"


class AccountsError(FailberryError):
    """The account files of a root file system cannot be parsed or changed as asked."""


def _parse(text: str, fields: int, name: str) -> list[list[str]]:
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(":")
        if len(parts) != fields:
            raise AccountsError(f"{name} line {number}: expected {fields} fields separated by ':', "
                                f"found {len(parts)}")
        rows.append(parts)
    return rows


def _render(rows: list[list[str]]) -> str:
    return "".join(":".join(row) + "\n" for row in rows)


@dataclass
class AccountDb:
    """The four account files of one root file system, as rows of fields."""

    passwd: list[list[str]]
    shadow: list[list[str]]
    group: list[list[str]]
    gshadow: list[list[str]] = field(default_factory=list)

    @classmethod
    def parse(cls, passwd: str, shadow: str, group: str, gshadow: str) -> AccountDb:
        """Parse the text of /etc/passwd, /etc/shadow, /etc/group and /etc/gshadow."""
        return cls(_parse(passwd, 7, "/etc/passwd"), _parse(shadow, 9, "/etc/shadow"),
                   _parse(group, 4, "/etc/group"), _parse(gshadow, 4, "/etc/gshadow"))

    def render(self) -> dict[str, str]:
        """File name under /etc to its new text."""
        return {"passwd": _render(self.passwd), "shadow": _render(self.shadow),
                "group": _render(self.group), "gshadow": _render(self.gshadow)}

    def user(self, name: str) -> list[str] | None:
        """The passwd row of a user, or None."""
        return next((row for row in self.passwd if row[0] == name), None)

    def group_row(self, name: str) -> list[str] | None:
        """The group row of a group, or None."""
        return next((row for row in self.group if row[0] == name), None)

    def _free_id(self) -> int:
        uids = {int(row[2]) for row in self.passwd if row[2].isdigit()}
        gids = {int(row[2]) for row in self.group if row[2].isdigit()}
        for candidate in range(FIRST_UID, LAST_UID + 1):
            if candidate not in uids and candidate not in gids:
                return candidate
        raise AccountsError(f"no free uid/gid from {FIRST_UID} to {LAST_UID}")

    def set_password(self, name: str, password: str) -> None:
        """Set the shadow password field (a crypt hash, `*` or a `!`-locked value)."""
        for row in self.shadow:
            if row[0] == name:
                row[1] = password
                return
        # A user without a shadow line gets one: no aging, never expires.
        self.shadow.append([name, password, "", "0", "99999", "7", "", "", ""])

    def lock(self, name: str) -> None:
        """Make a password unusable as `passwd -l` does; `*` and `!...` stay as they are."""
        for row in self.shadow:
            if row[0] == name and not row[1].startswith(("!", "*")):
                row[1] = "!" + row[1]

    def add_user(self, name: str, *, home: str, shell: str, gecos: str = "") -> tuple[int, int]:
        """Add a user with its own group (or keep an existing one); returns (uid, gid)."""
        existing = self.user(name)
        if existing is not None:
            return int(existing[2]), int(existing[3])
        grp = self.group_row(name)
        if grp is not None:
            gid = int(grp[2])
            uid = self._free_id()
        else:
            uid = gid = self._free_id()
            self.group.append([name, "x", str(gid), ""])
            self.gshadow.append([name, "!", "", ""])
        self.passwd.append([name, "x", str(uid), str(gid), gecos, home, shell])
        self.set_password(name, NO_PASSWORD)
        return uid, gid

    def add_to_groups(self, name: str, groups: tuple[str, ...]) -> list[str]:
        """Add a user to those of `groups` that exist; returns the groups it is now in."""
        joined = []
        for row in self.group:
            if row[0] not in groups:
                continue
            members = [m for m in row[3].split(",") if m]
            if name not in members:
                members.append(name)
            row[3] = ",".join(members)
            joined.append(row[0])
            for srow in self.gshadow:
                if srow[0] == row[0]:
                    smembers = [m for m in srow[3].split(",") if m]
                    if name not in smembers:
                        smembers.append(name)
                    srow[3] = ",".join(smembers)
        return sorted(joined)

    def login_users(self) -> list[str]:
        """Users in the normal uid range (people, not system accounts), in file order."""
        return [row[0] for row in self.passwd
                if row[2].isdigit() and FIRST_UID <= int(row[2]) <= LAST_UID]
