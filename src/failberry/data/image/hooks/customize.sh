#!/bin/sh
# mmdebstrap --customize-hook ($1: the new root): runs after every package is installed,
# after failberry's files for /etc/default/raspi-firmware, /etc/initramfs-tools/modules and
# /etc/fstab have been uploaded.
set -eu
root="$1"
rm -f "$root/usr/sbin/update-initramfs"
chroot "$root" dpkg-divert --quiet --local --rename --remove /usr/sbin/update-initramfs
# python-iptables drives the legacy x_tables backend; with it selected an admin's
# `iptables -S` shows failberry's rules.
chroot "$root" update-alternatives --quiet --set iptables /usr/sbin/iptables-legacy
chroot "$root" update-alternatives --quiet --set ip6tables /usr/sbin/ip6tables-legacy
printf 'MODULES=list\n' > "$root/etc/initramfs-tools/conf.d/failberry"
# One initramfs run; its raspi-firmware post-update hook fills /boot/firmware (kernel,
# initrd, DTBs, config.txt, cmdline.txt from /etc/default/raspi-firmware).
chroot "$root" update-initramfs -c -k all
# Every listed module must be in each initramfs or built into its kernel: a board whose SD
# card driver is missing stops at "ALERT! ... does not exist" with nothing on the network.
for modules in "$root"/lib/modules/*/; do
    version=$(basename "$modules")
    chroot "$root" lsinitramfs "/boot/initrd.img-$version" |
        sh "$(dirname "$0")/check-initramfs.sh" "$root/etc/initramfs-tools/modules" \
            "$modules/modules.builtin" "initrd.img-$version"
done
test -s "$root/boot/firmware/cmdline.txt"
test -s "$root/boot/firmware/config.txt"
# Nothing of the build machine's apt state on the image.
rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/cache/apt/"*.bin
