/* The string-keyed hash table moved to lib/base/table.h (the front ends' copy of blocks uses
 * it too). Kept for the limiter's files that still include it by this name. */
#ifndef LIMITER_TABLE_H
#define LIMITER_TABLE_H

#include "base/table.h"

#endif
