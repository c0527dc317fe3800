#!/bin/sh
# Checks one initramfs listing (`lsinitramfs` output on stdin) against the modules it must
# carry. $1: the module list (image/initramfs-modules.txt as uploaded: one name a line),
# $2: the kernel's modules.builtin, $3: the initramfs file's name for the message.
# A module the kernel has built in needs no file; any other must be in the initramfs, or the
# board cannot find its root file system (initramfs-tools' MODULES=list skips a name it
# cannot resolve without a word). Prints one line naming what is missing and fails.
set -eu
list="$1" builtin="$2" initrd="$3"
missing=$(awk -v listfile="$list" -v builtinfile="$builtin" '
    function norm(path,  name) {
        name = path; sub(/.*\//, "", name); sub(/\.ko(\.(xz|gz|zst))?$/, "", name)
        gsub(/-/, "_", name); return name
    }
    BEGIN {
        while ((getline line < builtinfile) > 0) have[norm(line)] = 1
        while ((getline line < listfile) > 0) {
            sub(/#.*/, "", line); gsub(/[ \t]/, "", line)
            if (line != "") want[++n] = line
        }
    }
    /\.ko(\.(xz|gz|zst))?$/ { have[norm($0)] = 1 }
    END {
        out = ""
        for (i = 1; i <= n; i++) if (!(norm(want[i]) in have)) out = out (out ? ", " : "") want[i]
        print out
    }')
if [ -n "$missing" ]; then
    echo "failberry: initramfs $initrd lacks required modules: $missing" \
         "(neither in it nor built into the kernel; see image/initramfs-modules.txt)" >&2
    exit 1
fi
echo "failberry: initramfs $initrd has every required module" >&2
