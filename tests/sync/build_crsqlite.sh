#!/usr/bin/env bash
# Build cr-sqlite's loadable extension (crsqlite.so) from the npm package
# @vlcn.io/crsqlite@0.16.3 with the stable Rust toolchain, offline from the
# registries only (npm + crates.io). The package's own install script
# downloads a prebuilt binary, which is not possible here, so it is skipped.
#
# Output: target/sync-engines/crsqlite/crsqlite.so (cached; rebuilt only when
# missing). Needs: npm, cargo, gcc, make, libclang-dev (for bindgen).
#
# Fixes applied to the 0.16.3 source (all with sed, on a copy):
#  1. rust-toolchain.toml files pin nightly-2023-10-05: removed (stable is used).
#  2. `#![feature(concat_idents)]` (unused; the feature is gone from current
#     Rust) and `#![feature(error_in_core)]` (stable since 1.81) are dropped.
#     The remaining gates (vec_into_raw_parts, core_intrinsics, lang_items)
#     are accepted by the stable compiler under RUSTC_BOOTSTRAP=1.
#  3. One string is passed to SQLite without its NUL terminator (see below).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
CACHE="${CRSQLITE_CACHE:-$ROOT/target/sync-engines}"
VERSION=0.16.3
OUT="$CACHE/crsqlite/crsqlite.so"
if [ -f "$OUT" ] && [ "${1:-}" != "--force" ]; then
  echo "$OUT"
  exit 0
fi
mkdir -p "$CACHE"
cd "$CACHE"
TGZ="vlcn.io-crsqlite-$VERSION.tgz"
[ -f "$TGZ" ] || npm pack --silent "@vlcn.io/crsqlite@$VERSION" >/dev/null
rm -rf crsqlite-src && mkdir crsqlite-src
tar xzf "$TGZ" -C crsqlite-src --strip-components=1
cd crsqlite-src
find rs -name rust-toolchain.toml -delete
sed -i '/#!\[feature(concat_idents)\]/d' rs/sqlite-rs-embedded/sqlite3_capi/src/lib.rs
sed -i '/#!\[feature(error_in_core)\]/d' rs/sqlite-rs-embedded/sqlite_nostd/src/lib.rs
# 3. `crsql_as_crr('t')` (and crsql_begin_alter/commit_alter) with one
#    argument pass the Rust literal "main" to C as a schema name: Rust string
#    literals have no NUL terminator, so SQLite read past it (MemoryError /
#    "no such table"). Give the literal its NUL.
sed -i 's/("main", args\[0\]\.text())/("main\\0", args[0].text())/' rs/core/src/lib.rs
grep -q '("main\\0", args\[0\]\.text())' rs/core/src/lib.rs
# the npm tarball carries stale build outputs of its authors' machines
rm -rf rs/*/target

(
  cd rs/bundle_static
  CARGO_TARGET_DIR="$PWD/target" CRSQLITE_COMMIT_SHA="npm-$VERSION" RUSTC_BOOTSTRAP=1 \
    cargo build --quiet --release --features loadable_extension
)
mkdir -p "$CACHE/crsqlite"
gcc -O2 -w -I./src -I./src/sqlite -std=c99 -fPIC -shared \
  src/crsqlite.c src/changes-vtab.c src/ext-data.c \
  rs/bundle_static/target/release/libcrsql_bundle_static.a \
  -o "$OUT.tmp"
mv -f "$OUT.tmp" "$OUT"
echo "$OUT"
