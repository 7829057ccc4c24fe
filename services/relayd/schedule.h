/* When relayd tries a deferred message again, when it gives up, and when the sender is told
 * that the message is late. Pure arithmetic on seconds; the caller supplies the clock and the
 * randomness, so the results are deterministic under test.
 *
 * Retries back off exponentially (RFC 5321 section 4.5.4.1: the retry interval SHOULD be at
 * least 30 minutes, and giving up takes at least 4-5 days; the queue's settings choose the
 * numbers). */
#ifndef POSTERN_RELAYD_SCHEDULE_H
#define POSTERN_RELAYD_SCHEDULE_H

#include <stdbool.h>
#include <stdint.h>

/* The wait after the attempts-th failed attempt (attempts >= 1; less counts as 1):
 * min_s * 2^(attempts-1), scaled by 0.9 .. 1.1 from jitter (0 .. 1, clamped; 0.5 = no
 * change), then kept within [min_s, max_s]. At least 1 second. */
int64_t schedule_next_delay_s(int attempts, int64_t min_s, int64_t max_s, double jitter);

/* When to try next after the attempts-th failure at now_s: now_s + the delay, but never
 * later than the moment the message expires (created_s + lifetime_s), so that the last
 * attempt falls on the deadline. */
int64_t schedule_next_attempt_s(int attempts, int64_t now_s, int64_t created_s,
                                int64_t lifetime_s, int64_t min_s, int64_t max_s,
                                double jitter);

/* A message queued at created_s has been in the queue for lifetime_s or more: the next
 * temporary failure is final (the recipients bounce). lifetime_s <= 0: never. */
bool schedule_expired(int64_t created_s, int64_t now_s, int64_t lifetime_s);

/* The moment the message expires, for a delay notice's Will-Retry-Until (RFC 3464
 * section 2.3.8). */
int64_t schedule_expires_at(int64_t created_s, int64_t lifetime_s);

/* A delay notice is due: none went out yet, warn_after_s > 0, the message has waited at
 * least warn_after_s, and it has not expired (then it bounces instead). */
bool schedule_delay_warning_due(int64_t created_s, int64_t now_s, int64_t warn_after_s,
                                int64_t lifetime_s, bool already_warned);

#endif
