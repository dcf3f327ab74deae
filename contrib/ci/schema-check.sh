#!/bin/sh
# Schema verification for CI: migrate a throwaway copy of a CoreScope
# database with corescope, then compare its schema with corescope's catalog
# (`check --diff`) and fail when a difference breaks CoreScope.
#
# Usage: schema-check.sh DB [TARGET]
#   DB       a CoreScope database (never modified: the script works on a copy)
#   TARGET   latest (default) or seed
# Environment:
#   CORESCOPE         the corescope binary (default: corescope on PATH)
#   SCHEMA_DIFF_JSON  where to write the `check --diff --json` report
#                     (default: schema-diff.json in the current directory)
# Exit: 0 no difference breaks CoreScope (drift and extra are listed, not
# fatal); 1 a difference breaks it; 2 usage; else corescope's own exit code.
set -u

db=${1:-}
target=${2:-latest}
corescope=${CORESCOPE:-corescope}
report=${SCHEMA_DIFF_JSON:-schema-diff.json}

if [ -z "$db" ] || [ $# -gt 2 ]; then
    echo "usage: $0 DB [latest|seed]" >&2
    exit 2
fi
if [ ! -f "$db" ]; then
    echo "$0: $db: no such file (give the path of a CoreScope database)" >&2
    exit 2
fi

work=$(mktemp -d) || exit 1
trap 'rm -rf "$work"' EXIT
copy="$work/schema-check.db"
cp "$db" "$copy" || exit 1
[ -f "$db-wal" ] && { cp "$db-wal" "$copy-wal" || exit 1; }
chmod u+w "$copy"

echo "== corescope migrate --target $target (on a copy of $db)"
"$corescope" --db "$copy" migrate --target "$target" || {
    rc=$?
    echo "$0: corescope migrate failed (exit $rc)" >&2
    exit "$rc"
}

echo "== corescope check --diff --target $target"
"$corescope" --db "$copy" check --diff --json --target "$target" >"$report"
rc=$?
# The human table of the same comparison, for the job log.
"$corescope" --db "$copy" check --diff --target "$target"
case $rc in
0) echo "schema-check: no difference breaks CoreScope (report: $report)" ;;
3)
    echo "schema-check: a difference breaks CoreScope; see the fix column above (report: $report)" >&2
    exit 1
    ;;
*)
    echo "$0: corescope check --diff failed (exit $rc)" >&2
    exit "$rc"
    ;;
esac
