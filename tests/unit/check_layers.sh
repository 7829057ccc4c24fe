#!/bin/sh
# lib/ is in layers (lib/README.md): a folder may include its own headers and those of the
# folders before it in ORDER, never one after it. Prints each include that breaks the
# rule, and exits 1 if there is any.
cd "$(dirname "$0")/../.." || exit 1
ORDER="base net auth store mail bus svc admin"
rank() { i=0; for d in $ORDER; do [ "$d" = "$1" ] && { echo $i; return; }; i=$((i + 1)); done; echo 99; }
bad=0
checked=0
for f in lib/*/*.c lib/*/*.h; do
    [ -f "$f" ] || continue
    own=$(basename "$(dirname "$f")")
    r_own=$(rank "$own")
    for inc in $(sed -n 's/^#include "\([a-z]*\)\/[^"]*".*/\1/p' "$f"); do
        checked=$((checked + 1))
        if [ "$(rank "$inc")" -gt "$r_own" ]; then
            echo "layer violation: $f ($own) includes $inc/"
            bad=1
        fi
    done
done
# A front end's parts of lib/svc must not include each other in a circle: fe_auth uses the
# skeleton, the skeleton knows nothing of fe_auth.
if grep -q '#include "svc/fe_auth.h"' lib/svc/fe.c lib/svc/fe.h; then
    echo "include cycle: lib/svc/fe.[ch] includes svc/fe_auth.h"
    bad=1
fi
echo "check_layers: $checked includes checked"
exit $bad
