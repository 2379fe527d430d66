#!/bin/sh
# Runs inside the debian-minimal image.
set -eu
. /etc/os-release
echo "$PRETTY_NAME on $(uname -r)"
[ "$VERSION_CODENAME" = trixie ]

# Every installed package is in dpkg's database, and every file (conffiles included)
# matches the checksum dpkg recorded for it.
count=$(dpkg-query -W -f '${db:Status-Abbrev}\n' | grep -c '^ii')
echo "$count packages installed"
[ "$count" -gt 50 ]
problems=$(dpkg --verify 2>&1 || true)
if [ -n "$problems" ]; then
    echo "dpkg --verify found files that differ from their packages:"
    echo "$problems"
    exit 1
fi
echo "dpkg --verify: all package files intact"

# apt reads the database and its sources.
apt-cache policy apt | head -n 3

# Alternatives and accounts were set up without maintainer scripts.
echo 'awk works' | awk '{ print }'
getent passwd root
[ "$(cat /etc/hostname)" = minimal ]
