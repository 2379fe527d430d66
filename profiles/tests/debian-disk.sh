#!/bin/sh
# Runs inside the debian-minimal-disk image, from kiln-test.service.
set -eu
. /etc/os-release
echo "$PRETTY_NAME on $(uname -r)"
echo "PID 1 is $(cat /proc/1/comm)"
[ "$(cat /proc/1/comm)" = systemd ]

root=$(findmnt -n -o SOURCE,FSTYPE,OPTIONS /)
echo "root: $root"
[ "$(findmnt -n -o FSTYPE /)" = ext4 ]

problems=$(dpkg --verify 2>&1 || true)
if [ -n "$problems" ]; then
    echo "dpkg --verify:"; echo "$problems"; exit 1
fi
echo "dpkg --verify: all package files intact"

echo "failed units:"
systemctl --failed --no-legend --plain || true
[ "$(hostname)" = minimal-disk ]

# Results come back to the host.
uname -a > /var/lib/kiln-results/uname.txt
systemctl list-units --no-legend --plain > /var/lib/kiln-results/units.txt
echo "wrote results"
