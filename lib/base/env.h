/* Reading the process environment, where every service takes its local settings. */
#ifndef POSTERN_ENV_H
#define POSTERN_ENV_H

/* The variable's value; fallback when it is unset or empty. */
const char *env_or(const char *name, const char *fallback);

/* A whole number of seconds from min to max in the variable; fallback when it is unset or
 * empty, -1 when it holds anything else (a sign, a unit, a fraction, spaces). */
long env_seconds(const char *name, long fallback, long min, long max);

#endif
