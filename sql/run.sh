#!/usr/bin/env bash
# SQL regression tests: run each sql/NAME.sql through Debian's sqlite3 shell
# with the extension loaded, compare with sql/expected/NAME.out.
# UPDATE=1 bash sql/run.sh rewrites the expected files.
set -u
cd "$(dirname "$0")/.."
SQLITE3=${SQLITE3:-sqlite3}
pass=0; fail=0
tmp=$(mktemp -d)
ln -s "$PWD/dist" "$tmp/dist"
for f in sql/*.sql; do
  name=$(basename "$f" .sql)
  out="$tmp/$name.out"
  (cd "$tmp" && rm -f ./*.db && "$SQLITE3" -batch :memory: < "$OLDPWD/$f" > "$out" 2>&1)
  # paths differ between checkouts: show them relative
  sed -i "s#$tmp/##g" "$out"
  if [ "${UPDATE:-0}" = 1 ]; then cp "$out" "sql/expected/$name.out"; fi
  if diff -u "sql/expected/$name.out" "$out" > "$tmp/$name.diff"; then
    echo "ok   sql/$name"; pass=$((pass+1))
  else
    echo "FAIL sql/$name"; cat "$tmp/$name.diff"; fail=$((fail+1))
  fi
done
rm -rf "$tmp"
echo "sql: $pass passed, $fail failed"
[ "$fail" = 0 ]
