#!/bin/sh
# More property-test cases than CI runs, over every parser that takes outside bytes
# (tests/fuzz_parsers.rs): control files, Packages, versions, InRelease, cpio, ext4 on
# mutated images, profiles on mutated TOML.
#
#     benches/fuzz.sh [CASES]        # default 20000 per property
#
# A failing case is shrunk and printed by proptest: add it to the unit tests of the
# parser it broke.
set -eu
cd "$(dirname "$0")/.."
KILN_PROPTEST_CASES="${1:-20000}" exec cargo test --release --test fuzz_parsers -- --nocapture
