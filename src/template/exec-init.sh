#!/bin/sh
# kiln exec's guest side, run as the test of kiln's exec initramfs: the host's root over
# 9p, read-only; fresh /proc, /sys, /dev, and tmpfs on /run, /tmp and /var/tmp (so no
# temporary file lives on 9p); the caller's directory writable at its own path; then
# the command, as the caller, from the script kiln left in its per-run share.
set -u
opts=trans=virtio,version=9p2000.L,access=any,cache=mmap,msize=524288
fail() {
    echo "kiln exec: $*" >&2
    echo "KILN_INFRA_ERROR=$*" > /dev/ttyS1
    exit 1
}
mkdir -p /host
mount -t 9p -o "ro,$opts" kiln_root /host ||
    fail "cannot mount the host's root over 9p (does the kernel have 9p and 9pnet_virtio?)"
mount -t proc proc /host/proc || fail "cannot mount /proc"
mount -t sysfs sysfs /host/sys || fail "cannot mount /sys"
mount -t devtmpfs devtmpfs /host/dev || fail "cannot mount /dev"
mkdir -p /host/dev/pts /host/dev/shm
mount -t devpts devpts /host/dev/pts
mount -t tmpfs tmpfs /host/dev/shm
[ -e /host/dev/fd ] || ln -s /proc/self/fd /host/dev/fd
mount -t tmpfs -o mode=0755 tmpfs /host/run || fail "cannot mount /run"
for d in /host/tmp /host/var/tmp; do
    [ -d "$d" ] && mount -t tmpfs -o mode=1777 tmpfs "$d"
done
[ -d /host/mnt ] && mount -t tmpfs tmpfs /host/mnt
mkdir -p /host/run/kiln
mount -t 9p -o "ro,$opts" kiln_run /host/run/kiln || fail "cannot mount kiln's run share"
. /host/run/kiln/settings
# Under /tmp or /run the directory is on a fresh tmpfs now: make the mount point.
mkdir -p "/host$KILN_CWD" 2>/dev/null
mount -t 9p -o "rw,$opts" kiln_cwd "/host$KILN_CWD" ||
    fail "cannot mount $KILN_CWD read-write"
# More shares (vmtest's mounts): "TAG MODE PATH" lines.
while read -r tag mode path; do
    [ -n "$tag" ] || continue
    mkdir -p "/host$path" 2>/dev/null
    mount -t 9p -o "$mode,$opts" "$tag" "/host$path" || fail "cannot mount $path"
done <<EOF
$KILN_MOUNTS
EOF
[ -d /host/sys/kernel/debug ] && mount -t debugfs debugfs /host/sys/kernel/debug 2>/dev/null
if [ "$KILN_UID" = 0 ]; then
    exec chroot /host /bin/sh /run/kiln/cmd
fi
# The host's setpriv, by path: busybox would run its own applet for a bare name.
[ -x /host/usr/bin/setpriv ] || fail "the host has no /usr/bin/setpriv (util-linux) to run the command as uid $KILN_UID"
exec chroot /host /usr/bin/setpriv --reuid="$KILN_UID" --regid="$KILN_GID" $KILN_GROUPS -- /bin/sh /run/kiln/cmd
