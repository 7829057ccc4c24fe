/* The limiter's decisions with an injected clock: each scenario is a table of events (the
 * time in ms, what happened, the verdict and number expected) run against a fresh limiter
 * whose hooks only record what they are told. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "policy.h"

#define S(x) ((int64_t)(x) * 1000) /* seconds, in ms */
#define NONE (-1)

/* ---- what the hooks saw --------------------------------------------------------------- */

typedef struct rec {
    int added, lifted, expired;     /* blocks */
    int disabled, enabled;          /* accounts */
    int alerts;
    block_t last_block;
    char alert_cause[16], alert_user[128], alert_limit[160], alert_action[16];
    char alert_addrs[256];
    bool alert_owner;
} rec_t;

static void rec_block(void *arg, block_t *b, limiter_change_t change, bool from_store)
{
    (void)from_store;
    rec_t *r = arg;
    r->last_block = *b;
    if (change == LIMITER_ADDED)
        r->added++;
    else if (change == LIMITER_LIFTED)
        r->lifted++;
    else
        r->expired++;
}

static void rec_account(void *arg, disabled_t *d, bool disabled, bool from_store)
{
    (void)d;
    (void)from_store;
    rec_t *r = arg;
    if (disabled)
        r->disabled++;
    else
        r->enabled++;
}

static void rec_alert(void *arg, const limiter_alert_t *a)
{
    rec_t *r = arg;
    r->alerts++;
    snprintf(r->alert_cause, sizeof r->alert_cause, "%s", a->cause);
    snprintf(r->alert_user, sizeof r->alert_user, "%s", a->user);
    snprintf(r->alert_limit, sizeof r->alert_limit, "%s", a->limit);
    snprintf(r->alert_action, sizeof r->alert_action, "%s", a->action);
    r->alert_addrs[0] = '\0';
    for (size_t i = 0; i < a->n_client_addrs; i++) {
        if (i)
            strcat(r->alert_addrs, " ");
        strcat(r->alert_addrs, a->client_addrs[i]);
    }
    r->alert_owner = a->notify_owner;
}

/* ---- scenarios ------------------------------------------------------------------------ */

typedef enum op {
    END,
    SEND,      /* who from client, n recipients, arg = queue id */
    RELEASE,   /* who, arg = queue id */
    MSG,       /* authenticated message event: who, arg = queue id, n recipients */
    MSG_ANON,  /* unauthenticated message event */
    ACHECK,    /* auth check: client, who; want_num = delay_ms (ALLOW) or until (BLOCKED) */
    AFAIL,     /* failed login: who from client, arg = the attempt (digest), n = service */
    AOK,       /* successful login */
    RCPT,      /* invalid recipient from client; want_num = delay_ms or until */
    EXPIRE,    /* time passes: limiter_expire() */
    EXEMPT,    /* arg = the exempt list, space-separated */
    PERSISTED, /* the store wrote everything: blocks and accounts become clean */
    SYNC_NONE, /* PostgreSQL has no blocks and no disabled accounts any more */
    ALERTS,    /* want_num = alerts so far */
    ADDED,     /* want_num = blocks added so far */
    LIFTED,    /* want_num = blocks lifted so far */
    EXPIRED,   /* want_num = blocks expired so far */
    DISABLES,  /* want_num = accounts disabled so far */
    ENABLES,   /* want_num = accounts enabled again so far */
    OFFENSE,   /* want_num = the last block's offense */
    DURATION,  /* want_num = the last block's length in ms */
    SERVICE,   /* want_num = the service of the last block */
} op_t;

typedef struct step {
    int64_t t;
    op_t op;
    const char *who;
    const char *client;
    const char *arg;
    uint32_t n;
    int want;         /* limiter_verdict_t, 0: not checked */
    int64_t want_num; /* see op_t; NONE: not checked */
} step_t;

typedef struct scenario {
    const char *name;
    const char *system;  /* system settings: "key=value key=value" */
    const char *user;    /* user-level HAMR settings of every user: "key=value ..." */
    const step_t *steps;
} scenario_t;

static void apply_settings(limiter_t *L, const char *system, const char *user, const char *who,
                           int64_t now)
{
    hamr_conf_t h;
    harvest_conf_t hv[CONF_NSERVICES];
    hamr_conf_init(&h);
    for (int s = 0; s < CONF_NSERVICES; s++)
        harvest_conf_init(&hv[s], s);
    char buf[512];
    snprintf(buf, sizeof buf, "%s", system ? system : "");
    char *save = NULL;
    for (char *kv = strtok_r(buf, " ", &save); kv; kv = strtok_r(NULL, " ", &save)) {
        char *eq = strchr(kv, '=');
        assert_non_null(eq);
        *eq = '\0';
        int applied = hamr_conf_apply(&h, CONF_SYSTEM, kv, eq + 1) > 0;
        for (int s = 0; s < CONF_NSERVICES; s++)
            applied |= harvest_conf_apply(&hv[s], kv, eq + 1) > 0;
        assert_true(applied);
    }
    limiter_set_conf(L, &h, hv);
    if (!user || !who)
        return;
    hamr_conf_t u = h;
    snprintf(buf, sizeof buf, "%s", user);
    for (char *kv = strtok_r(buf, " ", &save); kv; kv = strtok_r(NULL, " ", &save)) {
        char *eq = strchr(kv, '=');
        *eq = '\0';
        assert_int_equal(hamr_conf_apply(&u, CONF_USER, kv, eq + 1), 1);
    }
    limiter_user_conf(L, who, &u, limiter_generation(L), now);
}

static void digest_of(const char *attempt, uint8_t d[32])
{
    memset(d, 0, 32);
    memcpy(d, attempt, strlen(attempt) < 32 ? strlen(attempt) : 32);
}

static void mark_persisted(limiter_t *L)
{
    size_t pos = 0;
    block_t *b;
    while ((b = blocks_next(limiter_blocks(L), &pos))) {
        b->persist = PERSIST_CLEAN;
        b->written = 1;
    }
    pos = 0;
    disabled_t *d;
    while ((d = limiter_disabled_next(L, &pos))) {
        d->persist = PERSIST_CLEAN;
        d->written = 1;
    }
}

static void run_scenario(const scenario_t *sc)
{
    rec_t rec = { 0 };
    limiter_hooks_t hooks = { &rec, rec_block, rec_account, rec_alert };
    limiter_t *L = limiter_create(&hooks);
    assert_non_null(L);
    apply_settings(L, sc->system, NULL, NULL, 0);
    print_message("scenario: %s\n", sc->name);
    for (const step_t *s = sc->steps; s->op != END; s++) {
        limiter_reply_t r = { 0 };
        bool replied = false;
        int64_t got_num = NONE;
        if (sc->user && s->who && !limiter_user_fresh(L, s->who))
            apply_settings(L, sc->system, sc->user, s->who, s->t);
        switch (s->op) {
        case SEND:
            limiter_send_check(L, s->who, s->client, s->n, s->arg ? s->arg : "", s->t, &r);
            replied = true;
            got_num = r.verdict == LIMITER_THROTTLE ? (int64_t)r.retry_after_s : NONE;
            break;
        case RELEASE: limiter_send_release(L, s->who, s->arg, s->t); break;
        case MSG: limiter_message(L, s->who, s->arg ? s->arg : "", true, s->n, s->client, s->t); break;
        case MSG_ANON: limiter_message(L, s->who, s->arg, false, s->n, s->client, s->t); break;
        case ACHECK:
        case RCPT:
            if (s->op == ACHECK)
                limiter_auth_check(L, CONF_SVC_IMAP, s->client, s->who, s->t, &r);
            else
                limiter_rcpt_failure(L, CONF_SVC_SMTP, s->client, s->t, &r);
            replied = true;
            got_num = r.verdict == LIMITER_BLOCKED ? r.until_ms : (int64_t)r.delay_ms;
            break;
        case AFAIL:
        case AOK: {
            uint8_t d[32];
            if (s->arg)
                digest_of(s->arg, d);
            limiter_auth_event(L, s->n ? (int)s->n : CONF_SVC_IMAP, s->who, s->client,
                               s->op == AOK ? LIMITER_AUTH_OK : LIMITER_AUTH_BAD_CREDENTIALS,
                               s->arg ? d : NULL, s->arg ? sizeof d : 0, s->t);
            break;
        }
        case EXPIRE: limiter_expire(L, s->t); break;
        case EXEMPT: {
            char buf[256];
            const char *list[8];
            size_t n = 0;
            char *save = NULL;
            snprintf(buf, sizeof buf, "%s", s->arg);
            for (char *c = strtok_r(buf, " ", &save); c && n < 8; c = strtok_r(NULL, " ", &save))
                list[n++] = c;
            limiter_set_exempt(L, list, n, s->t);
            break;
        }
        case PERSISTED: mark_persisted(L); break;
        case SYNC_NONE:
            limiter_sync_blocks(L, NULL, 0, 1, true, s->t);
            limiter_sync_disabled(L, NULL, 0, 1, true);
            break;
        case ALERTS: got_num = rec.alerts; break;
        case ADDED: got_num = rec.added; break;
        case LIFTED: got_num = rec.lifted; break;
        case EXPIRED: got_num = rec.expired; break;
        case DISABLES: got_num = rec.disabled; break;
        case ENABLES: got_num = rec.enabled; break;
        case OFFENSE: got_num = rec.last_block.offense; break;
        case DURATION: got_num = rec.last_block.until_ms - rec.last_block.since_ms; break;
        case SERVICE: got_num = rec.last_block.service; break;
        case END: break;
        }
        print_message("  t=%lld op=%d who=%s client=%s -> verdict=%d num=%lld reason=%s\n",
                      (long long)s->t, s->op, s->who ? s->who : "-", s->client ? s->client : "-",
                      replied ? (int)r.verdict : 0, (long long)got_num, replied ? r.reason : "");
        if (s->want)
            assert_int_equal(r.verdict, s->want);
        if (s->want_num != NONE)
            assert_int_equal(got_num, s->want_num);
    }
    limiter_destroy(&L);
}

#define A LIMITER_ALLOW
#define T LIMITER_THROTTLE
#define D LIMITER_DISABLED
#define B LIMITER_BLOCKED
#define AL "alice@example.test"
#define C1 "192.0.2.10"
#define C2 "198.51.100.20"

/* max 3 per 60 s: the 4th waits for the oldest; it leaves exactly at t0 + 60 s. */
static const step_t hamr_edges[] = {
    { S(0), SEND, AL, C1, "q1", 1, A, NONE },
    { S(10), SEND, AL, C1, "q2", 1, A, NONE },
    { S(20), SEND, AL, C1, "q3", 1, A, NONE },
    { S(30), SEND, AL, C1, "q4", 1, T, 30 },
    { S(59) + 999, SEND, AL, C1, "q4", 1, T, 1 }, /* 1 ms left: at least 1 s */
    { S(59) + 1, SEND, AL, C1, "q4", 1, T, 1 },   /* clock clamps are the caller's */
    { S(60), SEND, AL, C1, "q4", 1, A, NONE },    /* exactly at the boundary */
    { S(60) + 1, SEND, AL, C1, "q5", 1, T, 10 },  /* 10 s + 60 s - 60.001 s = 9.999 s */
    { S(70), SEND, AL, C1, "q5", 1, A, NONE },
    { S(70), SEND, AL, C1, "q6", 1, T, 10 },
    /* At 130 s the entries of 60 s and 70 s have just left: a burst of 3, not more. */
    { S(130), SEND, AL, C1, "q7", 1, A, NONE },
    { S(130), SEND, AL, C1, "q8", 1, A, NONE },
    { S(130), SEND, AL, C1, "q9", 1, A, NONE },
    { S(130), SEND, AL, C1, "q10", 1, T, 60 },
    { S(140), SEND, AL, C1, "q10", 1, T, 50 },
    { S(190), SEND, AL, C1, "q10", 1, A, NONE },
    { 0, ALERTS, 0, 0, 0, 0, 0, 2 }, /* at 30 s, then not before 90 s: at 130 s */
    { 0, END, 0, 0, 0, 0, 0, 0 },
};

/* The same queue id asked again reserves nothing more; a release frees the slot; a message
 * event confirms a reservation, and counts when there is none. */
static const step_t hamr_reservations[] = {
    { S(0), SEND, AL, C1, "q1", 1, A, NONE },
    { S(1), SEND, AL, C1, "q1", 1, A, NONE },
    { S(2), SEND, AL, C1, "q2", 1, A, NONE },
    { S(3), SEND, AL, C1, "q3", 1, T, 57 },
    { S(4), RELEASE, AL, NULL, "q2", 0, 0, NONE },
    { S(5), SEND, AL, C1, "q3", 1, A, NONE },
    { S(6), MSG, AL, C1, "q1", 1, 0, NONE },  /* confirmed: no second count */
    { S(6), MSG, AL, C1, "q3", 1, 0, NONE },
    { S(7), SEND, AL, C1, "q4", 1, T, 53 },
    { S(7), RELEASE, AL, NULL, "q1", 0, 0, NONE }, /* already confirmed: nothing to free */
    { S(8), SEND, AL, C1, "q4", 1, T, 52 },
    { S(60), SEND, AL, C1, "q4", 1, A, NONE },
    { S(66), MSG_ANON, AL, C1, "zz", 1, 0, NONE }, /* unauthenticated never counts */
    { S(67), MSG, AL, C1, "qx", 1, 0, NONE },      /* no reservation: counts */
    { S(68), SEND, AL, C1, "q5", 1, T, 52 },
    { 0, END, 0, 0, 0, 0, 0, 0 },
};

/* disable: the limit is the last one allowed; then refused until PostgreSQL says it is
 * enabled again, which starts a fresh window. */
static const step_t hamr_disable[] = {
    { S(0), SEND, AL, C1, "q1", 1, A, NONE },
    { S(1), SEND, AL, C2, "q2", 1, A, NONE },
    { S(2), SEND, AL, C1, "q3", 1, D, NONE },
    { 0, DISABLES, 0, 0, 0, 0, 0, 1 },
    { S(3), SEND, AL, C1, "q4", 1, D, NONE },
    { S(4000), SEND, AL, C1, "q5", 1, D, NONE }, /* long after the window */
    { 0, DISABLES, 0, 0, 0, 0, 0, 1 },
    { 0, ALERTS, 0, 0, 0, 0, 0, 1 },
    /* Not written yet: a reload that does not see it keeps it. */
    { S(4001), SYNC_NONE, 0, 0, 0, 0, 0, NONE },
    { S(4002), SEND, AL, C1, "q6", 1, D, NONE },
    { 0, ENABLES, 0, 0, 0, 0, 0, 0 },
    /* Written, then gone from PostgreSQL: an administrator enabled it. */
    { S(4003), PERSISTED, 0, 0, 0, 0, 0, NONE },
    { S(4004), SYNC_NONE, 0, 0, 0, 0, 0, NONE },
    { 0, ENABLES, 0, 0, 0, 0, 0, 1 },
    { S(4005), SEND, AL, C1, "q7", 1, A, NONE },
    { S(4006), SEND, AL, C1, "q8", 1, A, NONE },
    { S(4007), SEND, AL, C1, "q9", 1, D, NONE },
    { 0, DISABLES, 0, 0, 0, 0, 0, 2 },
    { 0, END, 0, 0, 0, 0, 0, 0 },
};

/* One alert per user and interval, however often the limit is hit. */
static const step_t hamr_alert_once[] = {
    { S(0), SEND, AL, C1, "q1", 1, A, NONE },
    { S(1), SEND, AL, C2, "q2", 1, T, 59 },
    { 0, ALERTS, 0, 0, 0, 0, 0, 1 },
    { S(2), SEND, AL, C1, "q2", 1, T, 58 },
    { S(59), SEND, AL, C1, "q2", 1, T, 1 },
    { 0, ALERTS, 0, 0, 0, 0, 0, 1 },
    { S(60), SEND, AL, C1, "q2", 1, A, NONE },
    { S(60) + 500, SEND, AL, C1, "q3", 1, T, 60 }, /* 59.5 s: rounds up */
    { 0, ALERTS, 0, 0, 0, 0, 0, 1 },               /* 59.5 s since the last alert */
    { S(61), SEND, AL, C1, "q3", 1, T, 59 },
    { 0, ALERTS, 0, 0, 0, 0, 0, 2 },
    { S(61), SEND, "bob@example.test", C1, "b1", 1, A, NONE },
    { S(62), SEND, "bob@example.test", C1, "b2", 1, T, 59 },
    { 0, ALERTS, 0, 0, 0, 0, 0, 3 }, /* per user */
    { 0, END, 0, 0, 0, 0, 0, 0 },
};

/* max_recipients: the sum over the window; a message larger than the limit never fits. */
static const step_t hamr_recipients[] = {
    { S(0), SEND, AL, C1, "q1", 6, A, NONE },
    { S(10), SEND, AL, C1, "q2", 5, T, 50 },
    { S(11), SEND, AL, C1, "q2", 4, A, NONE },
    { S(12), SEND, AL, C1, "q3", 1, T, 48 },  /* 6 + 4 = 10: the first must leave */
    { S(13), SEND, AL, C1, "q3", 11, T, 60 }, /* never fits: a whole window */
    { S(60), SEND, AL, C1, "q3", 6, A, NONE },
    { 0, END, 0, 0, 0, 0, 0, 0 },
};

static const step_t hamr_off[] = {
    { S(0), SEND, AL, C1, "q1", 1, A, NONE },
    { S(0), SEND, AL, C1, "q2", 1, A, NONE },
    { S(0), SEND, AL, C1, "q3", 1, A, NONE },
    { 0, ALERTS, 0, 0, 0, 0, 0, 0 },
    { 0, END, 0, 0, 0, 0, 0, 0 },
};

/* Harvesting at max_failures within the interval; the edge is exact here too. */
#define BAD "203.0.113.5"
static const step_t harvest_block[] = {
    { S(0), AFAIL, "x@example.test", BAD, "pw1", 0, 0, NONE },
    { S(300), AFAIL, "y@example.test", BAD, "pw2", 0, 0, NONE },
    { S(600), AFAIL, "z@example.test", BAD, "pw3", 0, 0, NONE }, /* the first has left */
    { S(601), ACHECK, NULL, BAD, NULL, 0, A, 0 },
    { S(601), AFAIL, "w@example.test", BAD, "pw4", 0, 0, NONE }, /* 300, 600, 601 */
    { 0, ADDED, 0, 0, 0, 0, 0, 1 },
    { S(602), ACHECK, NULL, BAD, NULL, 0, B, S(601) + S(3600) },
    { S(602), ACHECK, "x@example.test", "203.0.113.6", NULL, 0, A, 0 }, /* the neighbour */
    { S(602), RCPT, NULL, BAD, NULL, 0, B, S(601) + S(3600) }, /* every service */
    { 0, ALERTS, 0, 0, 0, 0, 0, 1 },
    { 0, OFFENSE, 0, 0, 0, 0, 0, 1 },
    /* The block ends on its own. */
    { S(601) + S(3600) - 1, EXPIRE, 0, 0, 0, 0, 0, NONE },
    { 0, EXPIRED, 0, 0, 0, 0, 0, 0 },
    { S(601) + S(3600), ACHECK, NULL, BAD, NULL, 0, A, 0 }, /* ended, even before the sweep */
    { S(601) + S(3600), EXPIRE, 0, 0, 0, 0, 0, NONE },
    { 0, EXPIRED, 0, 0, 0, 0, 0, 1 },
    { 0, END, 0, 0, 0, 0, 0, 0 },
};

/* A phone with a stale password: the same attempt over and over counts once per interval. */
static const step_t harvest_digest[] = {
    { S(0), AFAIL, AL, C1, "stale", 0, 0, NONE },
    { S(10), AFAIL, AL, C1, "stale", 0, 0, NONE },
    { S(20), AFAIL, AL, C1, "stale", 0, 0, NONE },
    { S(30), AFAIL, AL, C1, "stale", 0, 0, NONE },
    { S(600), AFAIL, AL, C1, "stale", 0, 0, NONE }, /* counts again: the first left */
    { S(610), AFAIL, AL, C1, "stale", 0, 0, NONE },
    { S(611), ACHECK, AL, C1, NULL, 0, A, 0 },
    { 0, ADDED, 0, 0, 0, 0, 0, 0 },
    /* Different attempts do count; without a digest every failure counts. */
    { S(612), AFAIL, AL, C1, "guess1", 0, 0, NONE },
    { S(613), AFAIL, AL, C1, NULL, 0, 0, NONE },
    { 0, ADDED, 0, 0, 0, 0, 0, 1 },
    { S(614), ACHECK, AL, C1, NULL, 0, B, S(613) + S(3600) },
    { 0, END, 0, 0, 0, 0, 0, 0 },
};

/* IPv6 clients count per /64. */
static const step_t harvest_v6[] = {
    { S(0), AFAIL, NULL, "2001:db8:1:2::1", "a", 0, 0, NONE },
    { S(1), AFAIL, NULL, "2001:db8:1:2:aaaa::7", "b", 0, 0, NONE },
    { S(2), AFAIL, NULL, "2001:db8:1:3::1", "c", 0, 0, NONE }, /* another /64 */
    { S(3), ACHECK, NULL, "2001:db8:1:2::1", NULL, 0, A, 0 },
    { S(4), AFAIL, NULL, "2001:db8:1:2:ffff:ffff:ffff:ffff", "d", 0, 0, NONE },
    { 0, ADDED, 0, 0, 0, 0, 0, 1 },
    { S(5), ACHECK, NULL, "2001:db8:1:2:1234::1", NULL, 0, B, S(4) + S(3600) },
    { S(5), ACHECK, NULL, "2001:db8:1:3::1", NULL, 0, A, 0 },
    { S(5), ACHECK, NULL, "::ffff:203.0.113.9", NULL, 0, A, 0 },
    { 0, END, 0, 0, 0, 0, 0, 0 },
};

/* An exempt network is never blocked, and an exemption lifts a block at once. */
static const step_t harvest_exempt[] = {
    { S(0), EXEMPT, 0, 0, "10.0.0.0/8 2001:db8::/32", 0, 0, NONE },
    { S(1), AFAIL, NULL, "10.1.2.3", "a", 0, 0, NONE },
    { S(2), AFAIL, NULL, "10.1.2.3", "b", 0, 0, NONE },
    { S(3), AFAIL, NULL, "10.1.2.3", "c", 0, 0, NONE },
    { S(4), AFAIL, NULL, "10.1.2.3", "d", 0, 0, NONE },
    { S(5), ACHECK, NULL, "10.1.2.3", NULL, 0, A, 0 },
    { 0, ADDED, 0, 0, 0, 0, 0, 0 },
    { S(6), AFAIL, NULL, BAD, "a", 0, 0, NONE },
    { S(7), AFAIL, NULL, BAD, "b", 0, 0, NONE },
    { S(8), AFAIL, NULL, BAD, "c", 0, 0, NONE },
    { S(9), ACHECK, NULL, BAD, NULL, 0, B, NONE },
    { S(10), EXEMPT, 0, 0, "10.0.0.0/8 203.0.113.0/24", 0, 0, NONE },
    { 0, LIFTED, 0, 0, 0, 0, 0, 1 },
    { S(11), ACHECK, NULL, BAD, NULL, 0, A, 0 },
    { S(12), RCPT, NULL, BAD, NULL, 0, A, 0 },
    { 0, END, 0, 0, 0, 0, 0, 0 },
};

/* Repeat offenders: each block twice as long as the one before, up to 30 days. */
static const step_t harvest_repeat[] = {
    { S(0), AFAIL, NULL, BAD, "a", 0, 0, NONE },
    { S(1), AFAIL, NULL, BAD, "b", 0, 0, NONE },
    { S(2), AFAIL, NULL, BAD, "c", 0, 0, NONE },
    { 0, OFFENSE, 0, 0, 0, 0, 0, 1 },
    { 0, DURATION, 0, 0, 0, 0, 0, S(3600) },
    { S(2) + S(3600), EXPIRE, 0, 0, 0, 0, 0, NONE },
    { S(4000), AFAIL, NULL, BAD, "a", 0, 0, NONE }, /* counting starts afresh */
    { S(4001), AFAIL, NULL, BAD, "b", 0, 0, NONE },
    { S(4002), ACHECK, NULL, BAD, NULL, 0, A, 0 },
    { S(4003), AFAIL, NULL, BAD, "c", 0, 0, NONE },
    { 0, OFFENSE, 0, 0, 0, 0, 0, 2 },
    { 0, DURATION, 0, 0, 0, 0, 0, S(7200) },
    { S(4004), ACHECK, NULL, BAD, NULL, 0, B, S(4003) + S(7200) },
    { S(4003) + S(7200), EXPIRE, 0, 0, 0, 0, 0, NONE },
    { S(20000), RCPT, NULL, BAD, NULL, 0, A, 0 }, /* a dictionary attack is an offense too */
    { S(20001), RCPT, NULL, BAD, NULL, 0, A, 0 },
    { S(20002), RCPT, NULL, BAD, NULL, 0, A, 500 },
    { S(20003), RCPT, NULL, BAD, NULL, 0, B, S(20003) + S(14400) },
    { 0, OFFENSE, 0, 0, 0, 0, 0, 3 },
    { 0, ALERTS, 0, 0, 0, 0, 0, 3 },
    { 0, EXPIRED, 0, 0, 0, 0, 0, 2 },
    { 0, END, 0, 0, 0, 0, 0, 0 },
};

static const step_t harvest_cap[] = {
    { S(0), AFAIL, NULL, BAD, "a", 0, 0, NONE },
    { 0, DURATION, 0, 0, 0, 0, 0, S(20 * 86400) },
    { S(20 * 86400), EXPIRE, 0, 0, 0, 0, 0, NONE },
    { S(20 * 86400) + 1, AFAIL, NULL, BAD, "a", 0, 0, NONE },
    { 0, OFFENSE, 0, 0, 0, 0, 0, 2 },
    { 0, DURATION, 0, 0, 0, 0, 0, S(30 * 86400) },
    { 0, END, 0, 0, 0, 0, 0, 0 },
};

/* Many addresses against one account: its checks slow down (never a block, never a
 * lockout); an address that logged in as it is not slowed. */
#define VIC "victim@example.test"
static const step_t harvest_account[] = {
    { S(0), AOK, VIC, "192.0.2.200", NULL, 0, 0, NONE }, /* not under attack yet: not kept */
    { S(1), AFAIL, VIC, "198.51.100.1", "a", 0, 0, NONE },
    { S(2), AFAIL, VIC, "198.51.100.2", "b", 0, 0, NONE },
    { S(3), AFAIL, VIC, "198.51.100.3", "c", 0, 0, NONE },
    { S(4), ACHECK, VIC, "192.0.2.100", NULL, 0, A, 0 },
    { S(5), AFAIL, VIC, "198.51.100.4", "d", 0, 0, NONE },
    { S(5), AFAIL, VIC, "198.51.100.5", "d", 0, 0, NONE }, /* the same attempt: once */
    { S(6), ACHECK, VIC, "192.0.2.100", NULL, 0, A, 250 },
    { S(6), ACHECK, "other@example.test", "192.0.2.100", NULL, 0, A, 0 },
    { S(7), AFAIL, VIC, "198.51.100.6", "e", 0, 0, NONE },
    { S(8), AFAIL, VIC, "198.51.100.7", "f", 0, 0, NONE },
    { S(9), ACHECK, VIC, "192.0.2.100", NULL, 0, A, 750 },
    { 0, ALERTS, 0, 0, 0, 0, 0, 1 },
    { 0, ADDED, 0, 0, 0, 0, 0, 0 },
    /* The owner logs in from home once (slowly); from then on, no delay there. */
    { S(10), AOK, VIC, "192.0.2.100", NULL, 0, 0, NONE },
    { S(11), ACHECK, VIC, "192.0.2.100", NULL, 0, A, 0 },
    { S(11), ACHECK, VIC, "192.0.2.101", NULL, 0, A, 750 },
    { S(601) + 500, ACHECK, VIC, "192.0.2.101", NULL, 0, A, 500 }, /* the first has left */
    { S(609), ACHECK, VIC, "192.0.2.101", NULL, 0, A, 0 },
    { 0, END, 0, 0, 0, 0, 0, 0 },
};

static const step_t harvest_account_cap[] = {
#define F(i) { S(i), AFAIL, VIC, "198.51.100." #i, "p" #i, 0, 0, NONE }
    F(1), F(2), F(3), F(4), F(5), F(6), F(7), F(8), F(9), F(10),
    F(11), F(12), F(13), F(14), F(15), F(16), F(17), F(18), F(19), F(20),
    F(21), F(22), F(23), F(24), F(25), F(26), F(27), F(28), F(29), F(30),
#undef F
    { S(31), ACHECK, VIC, "192.0.2.1", NULL, 0, A, 5000 },
    { 0, ADDED, 0, 0, 0, 0, 0, 0 },
    { 0, END, 0, 0, 0, 0, 0, 0 },
};

/* Invalid recipients: no delay up to soft_limit, growing after, a block at hard_limit. */
static const step_t harvest_rcpt[] = {
    { S(0), RCPT, NULL, C2, NULL, 0, A, 0 },
    { S(1), RCPT, NULL, C2, NULL, 0, A, 0 },
    { S(2), RCPT, NULL, C2, NULL, 0, A, 500 },
    { S(3), RCPT, NULL, C2, NULL, 0, A, 1000 },
    { S(4), RCPT, NULL, C2, NULL, 0, A, 1500 },
    { S(5), RCPT, NULL, C2, NULL, 0, B, S(5) + S(3600) },
    { 0, ADDED, 0, 0, 0, 0, 0, 1 },
    { S(6), ACHECK, NULL, C2, NULL, 0, B, S(5) + S(3600) },
    { S(6), RCPT, NULL, C1, NULL, 0, A, 0 },
    { 0, END, 0, 0, 0, 0, 0, 0 },
};

static const step_t harvest_rcpt_cap[] = {
#define R(i) { S(i), RCPT, NULL, C2, NULL, 0, A, NONE }
    R(1), R(2), R(3), R(4), R(5), R(6), R(7), R(8), R(9), R(10),
    R(11), R(12), R(13), R(14), R(15), R(16), R(17), R(18), R(19), R(20),
    R(21), R(22), R(23), R(24), R(25),
#undef R
    { S(26), RCPT, NULL, C2, NULL, 0, A, 10000 },
    { 0, END, 0, 0, 0, 0, 0, 0 },
};

/* An administrator lifts a block in PostgreSQL; one not written yet is not lifted. */
static const step_t harvest_lift[] = {
    { S(0), AFAIL, NULL, BAD, "a", 0, 0, NONE },
    { S(1), SYNC_NONE, 0, 0, 0, 0, 0, NONE },
    { S(2), ACHECK, NULL, BAD, NULL, 0, B, NONE },
    { S(3), PERSISTED, 0, 0, 0, 0, 0, NONE },
    { S(4), SYNC_NONE, 0, 0, 0, 0, 0, NONE },
    { 0, LIFTED, 0, 0, 0, 0, 0, 1 },
    { S(5), ACHECK, NULL, BAD, NULL, 0, A, 0 },
    { S(6), AFAIL, NULL, BAD, "a", 0, 0, NONE },
    { 0, OFFENSE, 0, 0, 0, 0, 0, 2 }, /* lifting does not forgive */
    { 0, END, 0, 0, 0, 0, 0, 0 },
};

/* harvest.<service>.* overrides the system value for that service only. */
static const step_t harvest_per_service[] = {
    { S(0), AFAIL, NULL, BAD, "a", CONF_SVC_SMTP, 0, NONE },
    { S(1), AFAIL, NULL, BAD, "b", CONF_SVC_SMTP, 0, NONE },
    { S(2), ACHECK, NULL, BAD, NULL, 0, A, 0 },
    { S(3), AFAIL, NULL, C1, "a", CONF_SVC_POP3, 0, NONE },
    { S(4), AFAIL, NULL, C1, "b", CONF_SVC_POP3, 0, NONE },
    { S(5), ACHECK, NULL, C1, NULL, 0, B, S(4) + S(60) },
    { S(6), AFAIL, NULL, C2, "a", CONF_SVC_IMAP, 0, NONE }, /* off for IMAP */
    { S(7), AFAIL, NULL, C2, "b", CONF_SVC_IMAP, 0, NONE },
    { S(8), AFAIL, NULL, C2, "c", CONF_SVC_IMAP, 0, NONE },
    { S(9), ACHECK, NULL, C2, NULL, 0, A, 0 },
    { 0, END, 0, 0, 0, 0, 0, 0 },
};

/* webd's logins (service web) count on their own with harvest.web.*, and the block they
 * lead to holds for every service (asked here as IMAP). */
static const step_t harvest_web[] = {
    { S(0), AFAIL, NULL, C1, "a", CONF_SVC_WEB, 0, NONE },
    { S(1), AFAIL, NULL, C1, "b", CONF_SVC_SMTP, 0, NONE }, /* SMTP's own counter */
    { S(2), ACHECK, NULL, C1, NULL, 0, A, 0 },
    { S(3), AFAIL, NULL, C1, "c", CONF_SVC_WEB, 0, NONE },
    { S(4), ACHECK, NULL, C1, NULL, 0, B, S(3) + S(120) },
    { 0, SERVICE, 0, 0, 0, 0, 0, CONF_SVC_WEB },
    { 0, DURATION, 0, 0, 0, 0, 0, S(120) },
    { S(5), AFAIL, NULL, C2, "a", CONF_SVC_SMTP, 0, NONE },
    { S(6), AFAIL, NULL, C2, "b", CONF_SVC_SMTP, 0, NONE },
    { S(7), ACHECK, NULL, C2, NULL, 0, A, 0 }, /* two of SMTP's three */
    { S(8), AFAIL, NULL, C2, "c", CONF_SVC_SMTP, 0, NONE },
    { S(9), ACHECK, NULL, C2, NULL, 0, B, S(8) + S(3600) },
    { 0, SERVICE, 0, 0, 0, 0, 0, CONF_SVC_SMTP },
    { 0, END, 0, 0, 0, 0, 0, 0 },
};

static const scenario_t scenarios[] = {
    { "HAMR window edges", "hamr.max_messages=3 hamr.interval=60", NULL, hamr_edges },
    { "HAMR reservations", "hamr.max_messages=2 hamr.interval=60", NULL, hamr_reservations },
    { "HAMR disable", "hamr.max_messages=2 hamr.interval=60 hamr.action=disable", NULL,
      hamr_disable },
    { "HAMR alert once per interval", "hamr.max_messages=1 hamr.interval=60", NULL,
      hamr_alert_once },
    { "HAMR recipients", "hamr.max_recipients=10 hamr.interval=60", NULL, hamr_recipients },
    { "HAMR user level wins", "hamr.max_messages=100 hamr.interval=60",
      "hamr.max_messages=3", hamr_edges },
    { "HAMR off at user level", "hamr.max_messages=1", "hamr.enabled=off", hamr_off },
    { "harvest block", "harvest.max_failures=3 harvest.interval=600 harvest.block=3600", NULL,
      harvest_block },
    { "harvest repeated digest", "harvest.max_failures=3", NULL, harvest_digest },
    { "harvest IPv6 /64", "harvest.max_failures=3", NULL, harvest_v6 },
    { "harvest exemptions", "harvest.max_failures=3", NULL, harvest_exempt },
    { "harvest repeat offenders", "harvest.max_failures=3 harvest.soft_limit=2 harvest.hard_limit=4",
      NULL, harvest_repeat },
    { "harvest 30 day cap", "harvest.max_failures=1 harvest.block=1728000", NULL, harvest_cap },
    { "harvest account slowdown", "harvest.max_failures=3 harvest.interval=600", NULL,
      harvest_account },
    { "harvest account cap", "harvest.max_failures=3 harvest.interval=600", NULL,
      harvest_account_cap },
    { "harvest recipients", "harvest.soft_limit=2 harvest.hard_limit=6", NULL, harvest_rcpt },
    { "harvest recipients cap", "harvest.soft_limit=5 harvest.hard_limit=100", NULL,
      harvest_rcpt_cap },
    { "harvest lift", "harvest.max_failures=1", NULL, harvest_lift },
    { "harvest per service",
      "harvest.max_failures=3 harvest.pop3.max_failures=2 harvest.pop3.block=60 "
      "harvest.imap.enabled=off",
      NULL, harvest_per_service },
    { "harvest web", "harvest.max_failures=3 harvest.web.max_failures=2 harvest.web.block=120",
      NULL, harvest_web },
};

static void test_scenarios(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof scenarios / sizeof scenarios[0]; i++)
        run_scenario(&scenarios[i]);
}

/* ---- settings inheritance ------------------------------------------------------------- */

typedef struct row {
    conf_level_t level;
    const char *key, *value;
} row_t;

typedef struct inherit_case {
    const char *name;
    row_t rows[9];
    uint32_t max, interval;
    const char *action;
    bool alert, enabled;
    conf_level_t lmax, linterval, laction, lalert, lenabled;
    const char *limit;
} inherit_case_t;

#define SYS CONF_SYSTEM
#define DOM CONF_DOMAIN
#define USR CONF_USER
#define DEF CONF_DEFAULT

static const inherit_case_t inherit_cases[] = {
    { "nothing set", { { 0 } }, 100, 3600, "throttle", true, true, DEF, DEF, DEF, DEF, DEF,
      "100 messages (default level) per 3600 s (default level)" },
    { "system only",
      { { SYS, "hamr.max_messages", "50" }, { SYS, "hamr.action", "disable" } },
      50, 3600, "disable", true, true, SYS, DEF, SYS, DEF, DEF,
      "50 messages (system level) per 3600 s (default level)" },
    { "domain over system, each field on its own",
      { { SYS, "hamr.max_messages", "50" }, { SYS, "hamr.interval", "60" },
        { DOM, "hamr.max_messages", "20" }, { SYS, "hamr.alert", "off" } },
      20, 60, "throttle", false, true, DOM, SYS, DEF, SYS, DEF,
      "20 messages (domain level) per 60 s (system level)" },
    { "user over domain over system, in any order",
      { { USR, "hamr.max_messages", "5" }, { DOM, "hamr.max_messages", "20" },
        { SYS, "hamr.max_messages", "50" }, { DOM, "hamr.interval", "120" },
        { USR, "hamr.action", "disable" }, { SYS, "hamr.action", "throttle" },
        { SYS, "hamr.enabled", "off" }, { DOM, "hamr.enabled", "on" } },
      5, 120, "disable", true, true, USR, DOM, USR, DEF, DOM,
      "5 messages (user level) per 120 s (domain level)" },
    { "user turns it off",
      { { SYS, "hamr.enabled", "on" }, { USR, "hamr.enabled", "off" } },
      100, 3600, "throttle", true, false, DEF, DEF, DEF, DEF, USR, NULL },
    { "an invalid value is inherited over",
      { { SYS, "hamr.max_messages", "50" }, { USR, "hamr.max_messages", "0" },
        { DOM, "hamr.interval", "-5" }, { USR, "hamr.action", "bounce" },
        { DOM, "hamr.alert", "yes" } },
      50, 3600, "throttle", true, true, SYS, DEF, DEF, DEF, DEF, NULL },
};

static void test_inheritance(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof inherit_cases / sizeof inherit_cases[0]; i++) {
        const inherit_case_t *c = &inherit_cases[i];
        print_message("case: %s\n", c->name);
        hamr_conf_t h;
        hamr_conf_init(&h);
        for (const row_t *r = c->rows; r->key; r++)
            hamr_conf_apply(&h, r->level, r->key, r->value);
        assert_int_equal(h.max_messages, c->max);
        assert_int_equal(h.interval_s, c->interval);
        assert_int_equal(h.action, strcmp(c->action, "disable") == 0 ? HAMR_DISABLE : HAMR_THROTTLE);
        assert_int_equal(h.alert, c->alert);
        assert_int_equal(h.enabled, c->enabled);
        assert_int_equal(h.level[HAMR_MAX_MESSAGES], c->lmax);
        assert_int_equal(h.level[HAMR_INTERVAL], c->linterval);
        assert_int_equal(h.level[HAMR_ACTION], c->laction);
        assert_int_equal(h.level[HAMR_ALERT], c->lalert);
        assert_int_equal(h.level[HAMR_ENABLED], c->lenabled);
        if (c->limit) {
            char buf[160];
            assert_string_equal(hamr_conf_limit(&h, false, buf, sizeof buf), c->limit);
        }
    }
}

static void test_harvest_settings(void **state)
{
    (void)state;
    harvest_conf_t sys, pop3, web;
    harvest_conf_init(&sys, CONF_SVC_NONE);
    harvest_conf_init(&pop3, CONF_SVC_POP3);
    harvest_conf_init(&web, CONF_SVC_WEB);
    assert_true(sys.enabled);
    assert_int_equal(sys.max_failures, 10);
    assert_int_equal(sys.interval_s, 600);
    assert_int_equal(sys.block_s, 3600);
    assert_int_equal(sys.soft_limit, 5);
    assert_int_equal(sys.hard_limit, 20);
    static const struct {
        const char *key, *value;
        int sys, pop3, web;
    } rows[] = {
        { "harvest.pop3.max_failures", "4", 0, 1, 0 },
        { "harvest.max_failures", "7", 1, 0, 1 }, /* pop3 has its own already */
        { "harvest.imap.block", "60", 0, 0, 0 },
        { "harvest.interval", "300", 1, 1, 1 },
        { "harvest.pop3.interval", "abc", 0, -1, 0 },
        { "harvest.pop3.soft_limit", "3", 0, 0, 0 }, /* not a per-service field */
        { "hamr.max_messages", "5", 0, 0, 0 },
        { "harvest.web.block", "90", 0, 0, 1 },
        { "harvest.web.enabled", "off", 0, 0, 1 },
        { "harvest.web.hard_limit", "3", 0, 0, 0 }, /* not a per-service field */
        { "harvest.www.block", "90", 0, 0, 0 },     /* no such service */
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        assert_int_equal(harvest_conf_apply(&sys, rows[i].key, rows[i].value), rows[i].sys);
        assert_int_equal(harvest_conf_apply(&pop3, rows[i].key, rows[i].value), rows[i].pop3);
        assert_int_equal(harvest_conf_apply(&web, rows[i].key, rows[i].value), rows[i].web);
    }
    assert_int_equal(sys.max_failures, 7);
    assert_int_equal(pop3.max_failures, 4);
    assert_int_equal(pop3.interval_s, 300);
    assert_int_equal(sys.block_s, 3600);
    assert_int_equal(web.max_failures, 7);
    assert_int_equal(web.block_s, 90);
    assert_false(web.enabled);
    assert_int_equal(web.level[HARVEST_BLOCK], CONF_SERVICE);
    assert_string_equal(conf_service_name(CONF_SVC_WEB), "web");
    assert_int_equal(conf_service_number("web"), CONF_SVC_WEB);
    assert_int_equal(conf_service_number("imap"), CONF_SVC_IMAP);
    assert_int_equal(conf_service_number("any"), CONF_SVC_NONE);
    char buf[160];
    assert_string_equal(harvest_conf_limit(&pop3, HARVEST_MAX_FAILURES, "failed logins", buf,
                                           sizeof buf),
                        "4 failed logins (pop3 level) per 300 s (system level)");
}

/* The alert says who, what limit and from which level, which action, which addresses. */
static void test_alert_content(void **state)
{
    (void)state;
    rec_t rec = { 0 };
    limiter_hooks_t hooks = { &rec, rec_block, rec_account, rec_alert };
    limiter_t *L = limiter_create(&hooks);
    hamr_conf_t h;
    hamr_conf_init(&h);
    hamr_conf_apply(&h, CONF_SYSTEM, "hamr.interval", "600");
    hamr_conf_apply(&h, CONF_DOMAIN, "hamr.max_messages", "2");
    hamr_conf_apply(&h, CONF_USER, "hamr.alert_owner", "on");
    limiter_user_conf(L, AL, &h, limiter_generation(L), 0);
    assert_true(limiter_user_fresh(L, AL));
    limiter_reply_t r;
    limiter_send_check(L, AL, "192.0.2.1", 1, "a", S(1), &r);
    limiter_send_check(L, AL, "2001:db8::5", 1, "b", S(2), &r);
    limiter_send_check(L, AL, "192.0.2.1", 1, "c", S(3), &r);
    assert_int_equal(r.verdict, LIMITER_THROTTLE);
    assert_int_equal(rec.alerts, 1);
    assert_string_equal(rec.alert_cause, "hamr");
    assert_string_equal(rec.alert_user, AL);
    assert_string_equal(rec.alert_limit, "2 messages (domain level) per 600 s (system level)");
    assert_string_equal(rec.alert_action, "throttle");
    assert_true(strstr(rec.alert_addrs, "192.0.2.1") != NULL);
    assert_true(strstr(rec.alert_addrs, "2001:db8::5") != NULL);
    assert_true(rec.alert_owner);
    /* A refresh round keeps the cached settings in use, and asks for them once. */
    assert_false(limiter_user_refresh_due(L, AL));
    limiter_refresh(L);
    assert_true(limiter_user_fresh(L, AL));
    assert_true(limiter_user_refresh_due(L, AL));
    assert_false(limiter_user_refresh_due(L, AL));
    assert_false(limiter_user_refresh_due(L, "nobody@example.test"));
    /* A settings change makes the cached settings stale. */
    limiter_invalidate(L);
    assert_false(limiter_user_fresh(L, AL));
    /* Harvest alerts name the network and the action. */
    harvest_conf_t hv[CONF_NSERVICES];
    for (int s = 0; s < CONF_NSERVICES; s++) {
        harvest_conf_init(&hv[s], s);
        harvest_conf_apply(&hv[s], "harvest.max_failures", "1");
    }
    limiter_set_conf(L, NULL, hv);
    limiter_auth_event(L, CONF_SVC_SMTP, "root@example.test", "2001:db8:9:9::1",
                       LIMITER_AUTH_BAD_CREDENTIALS, NULL, 0, S(10));
    assert_int_equal(rec.alerts, 2);
    assert_string_equal(rec.alert_cause, "harvest");
    assert_string_equal(rec.alert_action, "block");
    assert_string_equal(rec.alert_addrs, "2001:db8:9:9::/64");
    assert_string_equal(rec.last_block.network, "2001:db8:9:9::/64");
    assert_int_equal(rec.last_block.service, CONF_SVC_SMTP);
    limiter_destroy(&L);
}

/* Idle state is freed; what still matters is kept. */
/* A follower (quiet) counts as the leader does but tells no hook; leaving quiet, it writes
 * and announces the blocks it reached lately. A reserved slot applied from the leader's
 * record counts like the leader's own. */
static void test_quiet_follower(void **state)
{
    (void)state;
    rec_t rec = { 0 };
    limiter_hooks_t hooks = { &rec, rec_block, rec_account, rec_alert };
    limiter_t *L = limiter_create(&hooks);
    assert_non_null(L);
    harvest_conf_t hv[CONF_NSERVICES];
    for (int s = 0; s < CONF_NSERVICES; s++) {
        harvest_conf_init(&hv[s], s);
        hv[s].max_failures = 3;
        hv[s].interval_s = 60;
    }
    hamr_conf_t h;
    hamr_conf_init(&h);
    h.enabled = true;
    h.max_messages = 2;
    h.interval_s = 60;
    limiter_set_conf(L, &h, hv);
    limiter_set_quiet(L, true, 0);
    int64_t t = 1000000;
    for (int i = 0; i < 3; i++) {
        uint8_t digest[8] = { (uint8_t)(i + 1) };
        limiter_auth_event(L, CONF_SVC_SMTP, "x@example.test", "192.0.2.9",
                           LIMITER_AUTH_BAD_CREDENTIALS, digest, sizeof digest, t + i);
    }
    assert_int_equal(rec.added + rec.alerts, 0); /* blocked quietly */
    limiter_reply_t r;
    limiter_auth_check(L, CONF_SVC_SMTP, "192.0.2.9", "", t + 10, &r);
    assert_int_equal(r.verdict, LIMITER_BLOCKED);

    /* The leader's two reserved slots fill the user's window here too. */
    limiter_apply_reserve(L, "u@example.test", "Q1", 1, 2, 60, t + 20);
    limiter_apply_reserve(L, "u@example.test", "Q2", 1, 2, 60, t + 21);
    limiter_apply_reserve(L, "u@example.test", "Q2", 1, 2, 60, t + 22); /* a repeat: no more */

    limiter_set_quiet(L, false, t + 30);
    assert_int_equal(rec.added, 1); /* written and announced now */
    assert_string_equal(rec.last_block.network, "192.0.2.9/32");
    limiter_send_check(L, "u@example.test", "192.0.2.1", 1, "Q3", t + 40, &r);
    assert_int_equal(r.verdict, LIMITER_THROTTLE);
    assert_false(r.reserved);
    /* A confirmed reservation does not count twice; a released one frees its slot. */
    limiter_message(L, "u@example.test", "Q1", true, 1, "192.0.2.1", t + 41);
    limiter_send_release(L, "u@example.test", "Q2", t + 42);
    limiter_send_check(L, "u@example.test", "192.0.2.1", 1, "Q4", t + 43, &r);
    assert_int_equal(r.verdict, LIMITER_ALLOW);
    assert_true(r.reserved);
    assert_int_equal(r.max_messages, 2);
    assert_int_equal(r.interval_s, 60);
    /* A record read twice (a follower's consumer delivering it again) counts once. */
    limiter_apply_reserve(L, "v@example.test", "R1", 1, 2, 60, t + 44);
    limiter_apply_reserve(L, "v@example.test", "R1", 1, 2, 60, t + 45);
    limiter_send_check(L, "v@example.test", "192.0.2.1", 1, "R2", t + 46, &r);
    assert_int_equal(r.verdict, LIMITER_ALLOW);

    /* Quiet blocks older than LIMITER_QUIET_KEEP_MS are PostgreSQL's to say: not re-announced. */
    limiter_set_quiet(L, true, 0);
    for (int i = 0; i < 3; i++) {
        uint8_t digest[8] = { (uint8_t)(i + 1) };
        limiter_auth_event(L, CONF_SVC_SMTP, "", "192.0.2.10", LIMITER_AUTH_BAD_CREDENTIALS,
                           digest, sizeof digest, t + 100 + i);
    }
    limiter_set_quiet(L, false, t + 102 + LIMITER_QUIET_KEEP_MS);
    assert_int_equal(rec.added, 1);
    limiter_destroy(&L);
}

/* A replica takes over with blocks it reached quietly: only those judged by the
 * administrator's settings, with harvesting still on, are announced; the others go (a
 * block the last leader made is in PostgreSQL and comes back with the reload). */
static void test_quiet_blocks_judged_by_the_settings(void **state)
{
    (void)state;
    int64_t t = 2000000;
    harvest_conf_t hv[CONF_NSERVICES];
    for (int s = 0; s < CONF_NSERVICES; s++) {
        harvest_conf_init(&hv[s], s);
        hv[s].enabled = true;
        hv[s].max_failures = 3;
        hv[s].interval_s = 60;
    }
    for (int round = 0; round < 3; round++) {
        rec_t rec = { 0 };
        limiter_hooks_t hooks = { &rec, rec_block, rec_account, rec_alert };
        limiter_t *L = limiter_create(&hooks);
        if (round > 0)
            limiter_set_conf(L, NULL, hv); /* round 0: the defaults, PostgreSQL not read */
        limiter_set_quiet(L, true, 0);
        for (int i = 0; i < 20; i++) {
            uint8_t digest[8] = { (uint8_t)(i + 1) };
            limiter_auth_event(L, CONF_SVC_SMTP, "", "192.0.2.20", LIMITER_AUTH_BAD_CREDENTIALS,
                               digest, sizeof digest, t + i);
        }
        limiter_reply_t r;
        limiter_auth_check(L, CONF_SVC_SMTP, "192.0.2.20", "", t + 30, &r);
        assert_int_equal(r.verdict, LIMITER_BLOCKED); /* blocked quietly */
        if (round == 2) { /* harvesting turned off before the takeover */
            harvest_conf_t off[CONF_NSERVICES];
            memcpy(off, hv, sizeof off);
            for (int s = 0; s < CONF_NSERVICES; s++)
                off[s].enabled = false;
            limiter_set_conf(L, NULL, off);
        }
        limiter_set_quiet(L, false, t + 40);
        limiter_auth_check(L, CONF_SVC_SMTP, "192.0.2.20", "", t + 50, &r);
        if (round == 1) {
            assert_int_equal(rec.added, 1);
            assert_int_equal(r.verdict, LIMITER_BLOCKED);
        } else {
            assert_int_equal(rec.added, 0);
            assert_int_not_equal(r.verdict, LIMITER_BLOCKED);
        }
        limiter_destroy(&L);
    }
}

static void test_prune(void **state)
{
    (void)state;
    limiter_t *L = limiter_create(NULL);
    limiter_reply_t r;
    char user[64];
    for (int i = 0; i < 1000; i++) {
        snprintf(user, sizeof user, "u%d@example.test", i);
        limiter_send_check(L, user, "192.0.2.1", 1, user, S(0), &r);
        limiter_auth_event(L, CONF_SVC_IMAP, user, "192.0.2.2", LIMITER_AUTH_BAD_CREDENTIALS,
                           NULL, 0, S(0));
    }
    limiter_rcpt_failure(L, CONF_SVC_SMTP, "192.0.2.3", S(0), &r);
    limiter_stats_t st;
    limiter_stats(L, &st);
    assert_int_equal(st.users, 1000);
    assert_int_equal(st.reservations, 1000);
    assert_int_equal(st.accounts, 1000);
    assert_int_equal(st.rcpt_counters, 1);
    /* Within the interval nothing goes. */
    limiter_prune(L, S(599), 100000);
    limiter_stats(L, &st);
    assert_int_equal(st.users + st.accounts + st.rcpt_counters, 2001);
    /* Harvest counters leave after their interval (600 s), users after theirs (3600 s). */
    limiter_prune(L, S(600), 100000);
    limiter_stats(L, &st);
    assert_int_equal(st.accounts, 0);
    assert_int_equal(st.rcpt_counters, 0);
    assert_int_equal(st.users, 1000);
    limiter_prune(L, S(3600), 100000);
    limiter_stats(L, &st);
    assert_int_equal(st.users, 0);
    assert_int_equal(st.reservations, 0);
    limiter_destroy(&L);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scenarios),
        cmocka_unit_test(test_inheritance),
        cmocka_unit_test(test_harvest_settings),
        cmocka_unit_test(test_alert_content),
        cmocka_unit_test(test_quiet_follower),
        cmocka_unit_test(test_quiet_blocks_judged_by_the_settings),
        cmocka_unit_test(test_prune),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
