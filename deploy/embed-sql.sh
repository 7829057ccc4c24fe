#!/bin/sh
# Turns the schema migrations (lib/store/migrations/NNNN_name.sql) into a C table, so that
# every binary carries the schema it was built against. Usage: embed-sql.sh FILE...
set -eu
echo '/* Generated from lib/store/migrations by deploy/embed-sql.sh; do not edit. */'
echo '#include "store/migrate.h"'
echo 'const migration_t migrations[] = {'
for f in "$@"; do
    base=$(basename "$f" .sql)
    version=$(echo "$base" | sed 's/_.*//' | sed 's/^0*//')
    printf '  { %s, "%s",\n' "$version" "$base"
    sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/    "/' -e 's/$/\\n"/' "$f"
    echo '  },'
done
echo '  { 0, 0, 0 }'
echo '};'
