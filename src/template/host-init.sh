#!/bin/sh
# kiln's guest side of a run in the host's userspace ([host], kiln exec), started as the
# test by kiln's initramfs init: the host's root read-only over 9p or virtiofs (the
# kernel command line's kiln.fs= says which), under the profile's own files if it has
# any, fresh /proc, /sys, /dev, tmpfs on /run,
# /tmp and /var/tmp (so no temporary file lives on a shared file system), the working
# directory writable at its own path; then, as the caller, the run's command (the file
# kiln left in its per-run share) or else this script's arguments.
set -u
fs=9p
read -r cmdline < /proc/cmdline
for word in $cmdline; do
    case "$word" in
        kiln.fs=*) fs="${word#kiln.fs=}" ;;
    esac
done
fail() {
    echo "kiln: $*" >&2
    echo "KILN_INFRA_ERROR=$*" > /dev/ttyS1
    exit 1
}
# share TAG ro|rw DIR. 9p's msize bounds every read and write: the most virtio takes
# (512 000 bytes) makes large sequential I/O several times faster than the default. A
# read-only share keeps what it read in the guest's page cache (cache=loose): every
# command starts by loading the host's libc, and reading it again each time is slow.
share() {
    mkdir -p "$3" 2>/dev/null
    if [ "$fs" = virtiofs ]; then
        mount -t virtiofs -o "$2" "$1" "$3"
    else
        cache=mmap
        [ "$2" = ro ] && cache=loose
        mount -t 9p -o "$2,trans=virtio,version=9p2000.L,access=any,cache=$cache,msize=512000" "$1" "$3"
    fi
}
# The modules of what this run uses, which the boot left for it: the transport's (one of
# two) and the overlay's. kiln lists each set in dependency order, without what the boot
# loaded.
load() {
    [ -r "/usr/lib/kiln/modules.$1" ] || return 0
    while read -r m; do
        insmod "$m" || echo "kiln: could not load $m" >&2
    done < "/usr/lib/kiln/modules.$1"
}
load "$fs"
layer=/usr/lib/kiln/layer
if [ -d "$layer" ]; then
    load overlay
    # The profile's own files and packages, over the host's root: both read-only.
    share kiln_root ro /lower || fail "cannot mount the host's root over $fs"
    mkdir -p /host
    mount -t overlay overlay -o "lowerdir=$layer:/lower" /host ||
        fail "cannot lay the image's files over the host's root (does the kernel have overlay?)"
else
    share kiln_root ro /host || fail "cannot mount the host's root over $fs"
fi
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
share kiln_run ro /host/run/kiln || fail "cannot mount kiln's run share"
. /host/run/kiln/settings
# Under /tmp or /run the directory is on a fresh tmpfs now: share() makes the mount point.
share kiln_cwd rw "/host$KILN_CWD" || fail "cannot mount $KILN_CWD read-write"
# More shares (vmtest's mounts): "TAG MODE PATH" lines.
while read -r tag mode path; do
    [ -n "$tag" ] || continue
    share "$tag" "$mode" "/host$path" || fail "cannot mount $path"
done <<END
$KILN_MOUNTS
END
# A name for the prompt: the guest's own, not the host's.
echo kiln > /proc/sys/kernel/hostname
[ -d /host/sys/kernel/debug ] && mount -t debugfs debugfs /host/sys/kernel/debug 2>/dev/null
if [ -f /host/run/kiln/cmd ]; then
    set -- /bin/sh /run/kiln/cmd
else
    set -- /bin/sh -c '. /run/kiln/env && exec "$@"' sh "$@"
fi
if [ "$KILN_TERMINAL" = 1 ]; then
    # The console becomes the shell's controlling terminal, so Ctrl-C reaches it.
    set -- /usr/bin/setsid --ctty "$@"
fi
if [ "$KILN_UID" = 0 ]; then
    exec chroot /host "$@"
fi
# The host's setpriv, by path: busybox would run its own applet for a bare name.
[ -x /host/usr/bin/setpriv ] || fail "the host has no /usr/bin/setpriv (util-linux) to run the command as uid $KILN_UID"
# shellcheck disable=SC2086
exec chroot /host /usr/bin/setpriv --reuid="$KILN_UID" --regid="$KILN_GID" $KILN_GROUPS -- "$@"
