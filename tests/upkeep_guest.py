"""A shell script for `boot-test --exec`: inside the isolated guest, make two local apt
repositories (one labelled as Debian's security archive, one as the plain release), each with
a newer version of a package the script installs first, and run `unattended-upgrade --dry-run`
against them. The image's configuration must pick the security update and only that."""

from __future__ import annotations

import re

FIX, OTHER = "failberry-test-fix", "failberry-test-other"

DRY_RUN = r"""
set -eu
work=$(mktemp -d)
cd "$work"
deb() {  # deb NAME VERSION DIR: a tiny package
    mkdir -p "pkg-$1-$2/DEBIAN"
    printf 'Package: %s\nVersion: %s\nArchitecture: all\nMaintainer: %s\nDescription: %s\n' \
        "$1" "$2" "failberry tests <t@failberry.invalid>" "test package" \
        > "pkg-$1-$2/DEBIAN/control"
    dpkg-deb --root-owner-group --build "pkg-$1-$2" "$3/$1_$2_all.deb" >/dev/null
}
repo() {  # repo DIR LABEL SUITE NAME: a flat repository with NAME 1.1
    mkdir -p "$1"
    deb "$4" 1.1 "$1"
    f="$4_1.1_all.deb"
    { cat "pkg-$4-1.1/DEBIAN/control"; echo "Filename: ./$f"; echo "Size: $(stat -c %s "$1/$f")"
      echo "SHA256: $(sha256sum "$1/$f" | cut -d' ' -f1)"; } > "$1/Packages"
    gzip -9kn "$1/Packages"
    { printf 'Origin: Debian\nLabel: %s\nSuite: %s\nCodename: %s\nDate: %s\nSHA256:\n' \
          "$2" "$3" "$3" "$(date -uR)"
      for i in Packages Packages.gz; do
          echo " $(sha256sum "$1/$i" | cut -d' ' -f1) $(stat -c %s "$1/$i") $i"
      done; } > "$1/Release"
}
mkdir -p installed
deb FIX 1.0 installed
deb OTHER 1.0 installed
sudo dpkg -i installed/*.deb >/dev/null
repo "$work/security" Debian-Security bookworm-security FIX
repo "$work/release" Debian bookworm OTHER
chmod -R a+rX "$work"
list=/etc/apt/sources.list.d/fbtest.list
printf 'deb [trusted=yes] file:%s ./\n' "$work/security" "$work/release" | sudo tee $list >/dev/null
sudo apt-get -q update -o Dir::Etc::sourcelist=$list -o Dir::Etc::sourceparts=- \
    -o APT::Get::List-Cleanup=0 >/dev/null
sudo unattended-upgrade --dry-run --debug 2>&1 |
    grep -E "Allowed origins are|Packages that will be upgraded|No packages found"
sudo dpkg --purge FIX OTHER >/dev/null
sudo rm $list
""".replace("FIX", FIX).replace("OTHER", OTHER)

# The journal is in RAM; its saver appends it to the card (what the hourly timer runs).
JOURNAL_SAVE = ("sudo systemctl start failberry-journal-save.service && "
                "sudo grep -q 'supervisor running' /var/log/failberry/journal.log && echo saved && "
                "sudo find /var/log/journal -name '*.journal' | wc -l")

# The boot's shape as systemd sees it: no unit failed (the masked ones included), and
# failberryd ordered after neither sysinit.target nor udev's coldplug.
BOOT_SHAPE = ("echo \"failed units: $(systemctl --failed --no-legend --plain | wc -l)\"; "
              "systemctl show -p After --value failberryd.service | tr ' ' '\\n' | "
              "grep -cxE 'sysinit.target|basic.target|systemd-udev-trigger.service' "
              "| sed 's/^/failberryd after sysinit or coldplug: /'; "
              # /etc/.updated from the build: sysusers, which networkd and /dev's static
              # nodes wait for, has nothing to do (and skipped every boot says so)
              "systemctl show -p ConditionResult --value systemd-sysusers.service "
              "| sed 's/^/sysusers condition: /'; "
              "systemctl show -p StartupCPUWeight --value systemd-networkd.service "
              "| sed 's/^/networkd startup weight: /'")


def check_report(out: str) -> None:
    """What boot-test printed about the guest (issue 18), and the dry run's verdict."""
    assert re.search(r"^  watchdog: \S", out, re.MULTILINE), out  # a device, or "none"
    assert "  swap: none" in out, out
    assert re.search(r"^  root mount: \S*noatime", out, re.MULTILINE), out
    assert re.search(r"failberryd start -> /health: -?\d+\.\ds", out), out
    assert re.search(r"failberryd start -> READY \(parts running\): \d+\.\ds", out), out
    assert "    failed units: 0\n" in out, out
    assert "    failberryd after sysinit or coldplug: 0\n" in out, out
    assert "    sysusers condition: no\n" in out, out
    assert "    networkd startup weight: 1000\n" in out, out
    assert re.search(r"idle writes: .+ in 60s, .+/day", out), out
    assert re.search(r"critical chain .*:\n    failberryd\.service", out), out
    assert "Allowed origins are: origin=Debian,codename=bookworm-security," \
           "label=Debian-Security\n" in out, out
    assert f"Packages that will be upgraded: {FIX}\n" in out, out
    # failberryd's line saved, and no journal file on the card
    assert re.search(r"exec 'sudo systemctl start failberry-journal-save.+ \(exit 0\):\n"
                     r"    saved\n    0\n", out), out
