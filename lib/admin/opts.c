/* mailctl: the options of commands that take their own (hamr, harvest set). */
#include <stdio.h>
#include <string.h>

#include "admin/admin.h"

/* The spec named by the option word a ("--max" or "--max=..."); *inline_r points after
 * '=' when the value is given inline, else NULL. */
static int opt_find(const opt_spec_t *specs, size_t nspecs, const char *a,
                    const char **inline_r)
{
    *inline_r = NULL;
    const char *eq = strchr(a, '=');
    size_t n = eq ? (size_t)(eq - a) : strlen(a);
    for (size_t i = 0; i < nspecs; i++)
        if (strlen(specs[i].name) == n && memcmp(specs[i].name, a, n) == 0) {
            if (eq)
                *inline_r = eq + 1;
            return (int)i;
        }
    return -1;
}

static int opt_unknown(ctl_t *ctl, const opt_spec_t *specs, size_t nspecs, const char *a)
{
    char known[512];
    size_t n = 0;
    known[0] = '\0';
    for (size_t i = 0; i < nspecs; i++) {
        int m = snprintf(known + n, sizeof known - n, "%s%s", i ? ", " : "", specs[i].name);
        if (m < 0 || (size_t)m >= sizeof known - n)
            break;
        n += (size_t)m;
    }
    ctl->usage = true;
    return ctl_error("unknown option %s here (this command takes %s)", a, known);
}

int opt_parse(ctl_t *ctl, const opt_spec_t *specs, size_t nspecs, char **args, int nargs,
              const char **values, char **pos, int *npos_r)
{
    int npos = 0;
    bool only_pos = false;
    for (size_t i = 0; i < nspecs; i++)
        values[i] = NULL;
    for (int i = 0; i < nargs; i++) {
        const char *a = args[i];
        if (only_pos || a[0] != '-' || a[1] == '\0') {
            pos[npos++] = args[i];
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_pos = true;
            continue;
        }
        const char *inline_value;
        int k = opt_find(specs, nspecs, a, &inline_value);
        if (k < 0)
            return opt_unknown(ctl, specs, nspecs, a);
        const opt_spec_t *spec = &specs[k];
        if (values[k]) {
            ctl->usage = true;
            return ctl_error("%s is given twice", spec->name);
        }
        if (!spec->value) {
            if (inline_value) {
                ctl->usage = true;
                return ctl_error("%s takes no value", spec->name);
            }
            values[k] = "";
            continue;
        }
        if (inline_value) {
            values[k] = inline_value;
        } else if (i + 1 < nargs) {
            values[k] = args[++i];
        } else {
            ctl->usage = true;
            return ctl_error("%s needs a value", spec->name);
        }
    }
    *npos_r = npos;
    return CTL_OK;
}
