#!/bin/sh
# mmdebstrap --essential-hook ($1: the new root): runs after the Essential packages are
# installed and before the rest (kernel, raspi-firmware, ...).
set -eu
root="$1"
# raspi-firmware's kernel hook copies the kernel, initrd and DTBs here.
mkdir -p "$root/boot/firmware"
# Defer update-initramfs: every kernel, firmware or udev package would otherwise rebuild
# the initramfs (MODULES=most, under qemu-user: tens of minutes). customize.sh puts the
# real one back and runs it once with MODULES=list.
chroot "$root" dpkg-divert --quiet --local --rename --add /usr/sbin/update-initramfs
cat > "$root/usr/sbin/update-initramfs" <<'STUB'
#!/bin/sh
echo "update-initramfs: deferred by failberry build ($*)" >&2
exit 0
STUB
chmod 0755 "$root/usr/sbin/update-initramfs"
