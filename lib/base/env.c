#include "base/env.h"

#include <stdlib.h>
#include <string.h>

const char *env_or(const char *name, const char *fallback)
{
    const char *v = getenv(name);
    return v && *v ? v : fallback;
}

long env_seconds(const char *name, long fallback, long min, long max)
{
    const char *v = env_or(name, NULL);
    if (!v)
        return fallback;
    size_t n = strlen(v);
    if (n > 9 || strspn(v, "0123456789") != n)
        return -1;
    long secs = strtol(v, NULL, 10);
    return secs >= min && secs <= max ? secs : -1;
}
