#!/bin/sh
# Turns webd's pages (services/webd/www/, text files) into a C table, so that the binary
# serves exactly the pages it was built with. Usage: embed-www.sh ROOT FILE...
set -eu
root=$1
shift
echo '/* Generated from services/webd/www by deploy/embed-www.sh; do not edit. */'
echo '#include <stddef.h>'
echo 'typedef struct web_file { const char *path; const char *data; size_t len; } web_file_t;'
echo 'const web_file_t web_files[] = {'
for f in "$@"; do
    rel=${f#"$root"}
    printf '  { "%s",\n' "$rel"
    # Each line a C string; the last line of a file without a final newline gets none.
    sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/??/?\\?/g' -e 's/^/    "/' -e 's/$/\\n"/' "$f"
    printf '    , %s },\n' "$(wc -c < "$f")"
done
echo '  { 0, 0, 0 }'
echo '};'
