#include "schedule.h"

int64_t schedule_next_delay_s(int attempts, int64_t min_s, int64_t max_s, double jitter)
{
    if (min_s < 1)
        min_s = 1;
    if (max_s < min_s)
        max_s = min_s;
    if (attempts < 1)
        attempts = 1;
    int64_t delay = min_s;
    for (int i = 1; i < attempts && delay < max_s; i++)
        delay = delay > max_s / 2 ? max_s : delay * 2;
    if (delay > max_s)
        delay = max_s;
    if (!(jitter >= 0)) /* also NaN */
        jitter = 0;
    if (jitter > 1)
        jitter = 1;
    double scaled = (double)delay * (0.9 + 0.2 * jitter);
    int64_t out = (int64_t)(scaled + 0.5);
    if (out < min_s)
        out = min_s;
    if (out > max_s)
        out = max_s;
    return out;
}

int64_t schedule_next_attempt_s(int attempts, int64_t now_s, int64_t created_s,
                                int64_t lifetime_s, int64_t min_s, int64_t max_s,
                                double jitter)
{
    int64_t next = now_s + schedule_next_delay_s(attempts, min_s, max_s, jitter);
    if (lifetime_s > 0) {
        int64_t deadline = schedule_expires_at(created_s, lifetime_s);
        if (next > deadline)
            next = deadline > now_s ? deadline : now_s;
    }
    return next;
}

bool schedule_expired(int64_t created_s, int64_t now_s, int64_t lifetime_s)
{
    return lifetime_s > 0 && now_s - created_s >= lifetime_s;
}

int64_t schedule_expires_at(int64_t created_s, int64_t lifetime_s)
{
    return created_s + lifetime_s;
}

bool schedule_delay_warning_due(int64_t created_s, int64_t now_s, int64_t warn_after_s,
                                int64_t lifetime_s, bool already_warned)
{
    return !already_warned && warn_after_s > 0 && now_s - created_s >= warn_after_s &&
           !schedule_expired(created_s, now_s, lifetime_s);
}
