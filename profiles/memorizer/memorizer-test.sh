#!/bin/sh
# The Memorizer test, the same in an initramfs (run as the test) and on a disk (run by
# kiln-memorizer.service): record the kernel's objects around a workload and keep the
# kmap. It runs the project's canonical sequence, with the file names of Memorizer 25
# and of the versions before it.
#
# Settings come from /etc/kiln/memorizer.env, which the profile writes from [variables]:
#   WORKLOAD         the command recorded (default: ls -l /)
#   MEMORIZER_EXTRA  more files to keep besides kmap, e.g. "stats function_calls global_table"
#   MEMORIZER_TRIES  how many times a busy (EBUSY) file is tried, a second apart (default 20)
#   RESULTS          where the files go (default: /results, kiln's results disk)
#
# Exit status: the workload's when every step worked; 1 when a step failed; 3 when this
# kernel has no Memorizer.
set -u
[ -r /etc/kiln/memorizer.env ] && . /etc/kiln/memorizer.env
WORKLOAD=${WORKLOAD:-ls -l /}
MEMORIZER_EXTRA=${MEMORIZER_EXTRA:-}
MEMORIZER_TRIES=${MEMORIZER_TRIES:-20}
RESULTS=${RESULTS:-/results}
NO_MEMORIZER=3
dir=/sys/kernel/debug/memorizer
err=$(mktemp) || exit 1
trap 'rm -f "$err"' EXIT

fail() {
    echo "memorizer: $*" >&2
    exit 1
}

if [ ! -d /sys/kernel/debug/memorizer ] && ! grep -qs ' /sys/kernel/debug ' /proc/mounts; then
    mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
fi
if [ ! -d "$dir" ]; then
    echo "memorizer: this kernel has no Memorizer (no $dir)" >&2
    exit "$NO_MEMORIZER"
fi

# The first of the names given that exists.
file() {
    for n in "$@"; do
        if [ -e "$dir/$n" ]; then
            echo "$dir/$n"
            return 0
        fi
    done
    fail "none of $* is in $dir; is this a Memorizer kernel?"
}

# Runs the command, again while it fails with EBUSY (Memorizer is busy), up to
# MEMORIZER_TRIES times.
busy_retry() {
    i=1
    while ! "$@" 2>"$err"; do
        if ! grep -q 'busy' "$err"; then
            cat "$err" >&2
            return 1
        fi
        if [ "$i" -ge "$MEMORIZER_TRIES" ]; then
            cat "$err" >&2
            echo "memorizer: still busy after $i tries: $*" >&2
            return 1
        fi
        i=$((i + 1))
        sleep 1
    done
}

# write VALUE NAME [OLDER-NAME]
write() {
    value=$1
    shift
    f=$(file "$@") || exit 1
    busy_retry sh -c "echo $value > '$f'" || fail "cannot write $value to $f"
}

# debugfs files report size 0: read them to the end instead of trusting it (dd reads
# with read(2), where a copy by size or copy_file_range could stop at once).
keep() {
    busy_retry dd if="$dir/$1" of="$2" bs=1M || fail "cannot read $dir/$1"
}

write 1 clear_dead_objects clear_dead_objs
keep kmap /dev/null
write 1 clear_printed_list
write 0 log_live_enabled print_live_obj
write 1 log_accesses_enabled memorizer_log_access
write 1 memorizer_enabled

echo "memorizer: recording: $WORKLOAD"
sh -c "$WORKLOAD"
status=$?

write 0 memorizer_enabled
write 0 log_accesses_enabled memorizer_log_access

mkdir -p "$RESULTS" || fail "cannot create $RESULTS"
keep kmap "$RESULTS/kmap"
[ -s "$RESULTS/kmap" ] || fail "the kmap is empty"
for f in $MEMORIZER_EXTRA; do
    keep "$f" "$RESULTS/$f"
done
echo "memorizer: kmap of $(wc -c < "$RESULTS/kmap") bytes; the workload exited with $status"
exit "$status"
