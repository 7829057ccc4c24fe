#include "replica.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "base/log.h"
#include "bus/js.h"
#include "bus/subjects.h"

#define TICK_MS 50
#define SETUP_RETRY_MS 1000
#define DEFAULT_HISTORY_MS (3600LL * 1000) /* a new stream's, until the settings are known */
/* This many JetStream failures in a row (about 2 s) and the stream and bucket are set up
 * again: they may have been deleted, or the servers' storage lost. */
#define FAILURES_RESETUP 12
/* The stream's presence is checked at every this many looks at the lease (about 1 s). */
#define STREAM_CHECK_LOOKS 5
#define VALUE_MAX 512
#define ID_MAX 160

typedef enum state { S_CONNECTING, S_STANDBY, S_CATCHING_UP, S_LEADING, S_STOPPED } state_t;

typedef enum job_kind { JOB_SETUP, JOB_WATCH, JOB_TAKE, JOB_RENEW, JOB_RELEASE } job_kind_t;

/* One blocking JetStream call (or a few) on a worker thread; the loop reads the outcome. */
typedef struct job {
    uv_work_t req;
    replica_t *r;
    job_kind_t kind;
    uint64_t started_ms; /* monotonic */
    /* in */
    uint64_t rev; /* TAKE: 0 to create the key, else the revision to replace; RENEW, RELEASE */
    uint64_t applied_seq; /* SETUP: the last message applied before (0: none) */
    char value[VALUE_MAX];
    int64_t history_ms; /* RENEW: also set the stream's maximum age to this */
    bool want_seq;      /* RENEW: also read the stream's last message */
    bool check_stream;  /* WATCH, RENEW: also see that the stream is still there */
    /* out */
    bool history_ok;
    bool stream_missing; /* check_stream: it is not (deleted, or the servers' storage lost) */
    bool ok;
    bool found;          /* WATCH, failed RENEW: the key exists */
    uint64_t found_rev;
    char found_value[VALUE_MAX];
    uint64_t new_rev;
    uint64_t last_seq;   /* SETUP, TAKE: the stream's last message */
    bool restart;        /* SETUP: the stream holds less than was applied: it was made anew */
    kvStore *kv;         /* SETUP */
    bus_follow_t *follow;
    char err[256];
} job_t;

struct replica {
    uv_loop_t *loop;
    bus_t *bus;
    replica_hooks_t hooks;
    int stream_replicas;
    char id[ID_MAX];
    state_t state;
    uv_timer_t timer;
    bool timer_open;
    job_t *job; /* in flight */
    bool dead;  /* destroyed while a job was in flight: freed when it ends */
    uint64_t last_job_ms;
    kvStore *kv;
    bus_follow_t *follow;
    uint64_t applied_seq, target_seq;
    int failures; /* JetStream calls failed in a row */
    unsigned long looks; /* WATCH and RENEW jobs made */
    bool caught_up_once;
    /* standby: the lease's revision as last seen, and since when (monotonic) */
    uint64_t seen_rev;
    uint64_t seen_at_ms;
    char seen_holder[ID_MAX];
    /* leading */
    uint64_t my_rev;
    uint64_t renewed_ms; /* monotonic start of the last successful renewal (or take) */
    int64_t led_since_ms, takeover_ms;
    char took_from[ID_MAX];
    unsigned long takeovers;
    int64_t history_ms, history_set_ms;
    char error[256];
    void (*stop_done)(void *arg);
    void *stop_arg;
    bool release_wanted;
};

static uint64_t mono_ms(void)
{
    return uv_hrtime() / 1000000;
}

static int64_t wall_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static const char *state_name(state_t s)
{
    switch (s) {
    case S_CONNECTING: return "connecting";
    case S_STANDBY: return "standby";
    case S_CATCHING_UP: return "catching up";
    case S_LEADING: return "leading";
    case S_STOPPED: return "stopped";
    }
    return "?";
}

/* "replica=<id>": the holder named in a lease value, into out. */
static void value_holder(const char *value, char *out, size_t len)
{
    const char *p = strstr(value, "replica=");
    size_t n = 0;
    if (p) {
        p += 8;
        n = strcspn(p, " ");
    }
    snprintf(out, len, "%.*s", (int)(n < len ? n : len - 1), p ? p : "");
}

/* ---- worker threads --------------------------------------------------------------------- */

static void follow_cb(void *arg, const char *subject, const void *data, size_t len, uint64_t seq,
                      int64_t time_ms);

static void stream_config(jsStreamConfig *cfg, int replicas, int64_t history_ms)
{
    static const char *subjects[] = {
        BUS_SUBJECT_EVENT_AUTH,
        BUS_SUBJECT_EVENT_MESSAGE,
        BUS_SUBJECT_LIMITER_RELEASE,
        BUS_SUBJECT_LIMITER_LOG_ALL,
    };
    jsStreamConfig_Init(cfg);
    cfg->Name = BUS_STREAM_LIMITER;
    cfg->Description = "Postern: what the limiter's counters are made of";
    cfg->Subjects = subjects;
    cfg->SubjectsLen = (int)(sizeof subjects / sizeof subjects[0]);
    cfg->Storage = js_FileStorage;
    cfg->Replicas = replicas;
    cfg->MaxAge = history_ms * 1000000; /* nanoseconds */
}

static void job_error(job_t *j, const char *what, natsStatus s)
{
    const char *last = nats_GetLastError(NULL);
    snprintf(j->err, sizeof j->err, "%s: %s", what, last && *last ? last : natsStatus_GetText(s));
}

/* The stream (created if missing: an existing one keeps its settings), its last message,
 * the bucket, and a follower from the start of the stream. */
static void job_setup(job_t *j, replica_t *r)
{
    jsCtx *js = bus_js(r->bus);
    if (!js) {
        snprintf(j->err, sizeof j->err, "no JetStream context");
        return;
    }
    jsStreamInfo *si = NULL;
    jsErrCode je = 0;
    natsStatus s = js_GetStreamInfo(&si, js, BUS_STREAM_LIMITER, NULL, &je);
    if (s == NATS_NOT_FOUND) {
        jsStreamConfig cfg;
        stream_config(&cfg, r->stream_replicas, DEFAULT_HISTORY_MS);
        s = js_AddStream(&si, js, &cfg, NULL, &je);
    }
    if (s != NATS_OK) {
        job_error(j, "stream " BUS_STREAM_LIMITER, s);
        jsStreamInfo_Destroy(si);
        return;
    }
    j->last_seq = si->State.LastSeq;
    /* Set up again after failures: go on after the last message applied, unless the stream
     * no longer holds it (made anew, or aged past it): then from its start. */
    uint64_t start = 0;
    if (j->applied_seq && si->State.LastSeq >= j->applied_seq &&
        si->State.FirstSeq <= j->applied_seq + 1)
        start = j->applied_seq + 1;
    else if (j->applied_seq)
        j->restart = true; /* set up again from 0, once the loop has forgotten applied_seq */
    jsStreamInfo_Destroy(si);
    if (j->restart)
        return;

    kvConfig kc;
    kvConfig_Init(&kc);
    kc.Bucket = BUS_BUCKET_LIMITER;
    kc.Description = "Postern: the limiter's lease";
    kc.History = 1;
    kc.StorageType = js_FileStorage;
    kc.Replicas = r->stream_replicas;
    s = js_KeyValue(&j->kv, js, BUS_BUCKET_LIMITER);
    if (s == NATS_NOT_FOUND)
        s = js_CreateKeyValue(&j->kv, js, &kc);
    if (s != NATS_OK) {
        job_error(j, "bucket " BUS_BUCKET_LIMITER, s);
        return;
    }
    /* Messages reach follow_cb through the loop, so none is applied before after_setup(). */
    char err[200];
    j->follow = bus_follow(r->bus, BUS_STREAM_LIMITER, start, follow_cb, r, err, sizeof err);
    if (!j->follow) {
        snprintf(j->err, sizeof j->err, "follow the stream: %s", err);
        return;
    }
    j->ok = true;
}

/* Without the stream, nothing the front ends publish is counted, and the follower cannot
 * say so (its consumer is gone with it): asked every few looks at the lease. */
static void stream_check(job_t *j, replica_t *r)
{
    if (!j->check_stream)
        return;
    jsStreamInfo *si = NULL;
    jsErrCode je = 0;
    j->stream_missing =
        js_GetStreamInfo(&si, bus_js(r->bus), BUS_STREAM_LIMITER, NULL, &je) == NATS_NOT_FOUND;
    jsStreamInfo_Destroy(si);
}

/* The leader keeps the stream's maximum age at the longest interval of the settings. */
static void stream_history(job_t *j, replica_t *r)
{
    jsStreamInfo *si = NULL;
    jsErrCode je = 0;
    natsStatus s = js_GetStreamInfo(&si, bus_js(r->bus), BUS_STREAM_LIMITER, NULL, &je);
    if (s == NATS_OK && si->Config->MaxAge != j->history_ms * 1000000) {
        jsStreamConfig cfg = *si->Config;
        cfg.MaxAge = j->history_ms * 1000000;
        jsStreamInfo *after = NULL;
        s = js_UpdateStream(&after, bus_js(r->bus), &cfg, NULL, &je);
        jsStreamInfo_Destroy(after);
    }
    jsStreamInfo_Destroy(si);
    j->history_ok = s == NATS_OK;
    if (s != NATS_OK)
        job_error(j, "stream history", s);
}

static void lease_get(job_t *j, kvStore *kv)
{
    kvEntry *e = NULL;
    natsStatus s = kvStore_Get(&e, kv, BUS_BUCKET_LIMITER_LEADER);
    if (s == NATS_NOT_FOUND) {
        j->ok = true;
        return;
    }
    if (s != NATS_OK) {
        job_error(j, "lease", s);
        return;
    }
    j->ok = true;
    j->found = true;
    j->found_rev = kvEntry_Revision(e);
    snprintf(j->found_value, sizeof j->found_value, "%.*s", kvEntry_ValueLen(e),
             (const char *)kvEntry_Value(e));
    kvEntry_Destroy(e);
}

static void work_cb(uv_work_t *req)
{
    job_t *j = req->data;
    replica_t *r = j->r;
    natsStatus s;
    if (j->kind == JOB_RENEW)
        stream_check(j, r);
    switch (j->kind) {
    case JOB_SETUP:
        job_setup(j, r);
        break;
    case JOB_WATCH:
        lease_get(j, r->kv);
        stream_check(j, r);
        break;
    case JOB_TAKE:
        s = j->rev ? kvStore_Update(&j->new_rev, r->kv, BUS_BUCKET_LIMITER_LEADER, j->value,
                                    (int)strlen(j->value), j->rev)
                   : kvStore_Create(&j->new_rev, r->kv, BUS_BUCKET_LIMITER_LEADER, j->value,
                                    (int)strlen(j->value));
        if (s != NATS_OK) {
            job_error(j, "lease take", s);
            break;
        }
        /* Everything the last leader logged is in the stream by now: it stopped answering
         * (and logging) REPLICA_LEASE_MS - REPLICA_SERVE_MS before its lease could be taken. */
        jsStreamInfo *si = NULL;
        jsErrCode je = 0;
        s = js_GetStreamInfo(&si, bus_js(r->bus), BUS_STREAM_LIMITER, NULL, &je);
        if (s != NATS_OK) {
            job_error(j, "stream info", s);
            j->ok = true; /* the lease is ours; catch up is asked again at the next renewal */
            j->last_seq = UINT64_MAX;
            break;
        }
        j->last_seq = si->State.LastSeq;
        jsStreamInfo_Destroy(si);
        j->ok = true;
        break;
    case JOB_RENEW:
    case JOB_RELEASE:
        s = kvStore_Update(&j->new_rev, r->kv, BUS_BUCKET_LIMITER_LEADER, j->value,
                           (int)strlen(j->value), j->rev);
        if (s == NATS_OK) {
            j->ok = true;
            if (j->history_ms)
                stream_history(j, r);
            if (j->kind == JOB_RENEW && j->want_seq) {
                jsStreamInfo *info = NULL;
                jsErrCode jerr = 0;
                if (js_GetStreamInfo(&info, bus_js(r->bus), BUS_STREAM_LIMITER, NULL, &jerr) ==
                    NATS_OK)
                    j->last_seq = info->State.LastSeq;
                jsStreamInfo_Destroy(info);
            }
            break;
        }
        job_error(j, "lease renewal", s);
        char err[sizeof j->err];
        memcpy(err, j->err, sizeof err);
        lease_get(j, r->kv); /* who holds it now? */
        j->ok = false;
        memcpy(j->err, err, sizeof err);
        break;
    }
}

/* ---- the loop ----------------------------------------------------------------------------- */

static void after_cb(uv_work_t *req, int status);

static job_t *job_start(replica_t *r, job_kind_t kind)
{
    job_t *j = calloc(1, sizeof *j);
    if (!j)
        return NULL;
    j->r = r;
    j->kind = kind;
    j->req.data = j;
    j->started_ms = mono_ms();
    r->last_job_ms = j->started_ms;
    return j;
}

static void job_queue(replica_t *r, job_t *j)
{
    r->job = j;
    if (uv_queue_work(r->loop, &j->req, work_cb, after_cb) < 0) {
        r->job = NULL;
        free(j);
    }
}

static void lease_value(replica_t *r, char *out, size_t len, const char *state)
{
    snprintf(out, len,
             "replica=%s state=%s since=%" PRId64 " renewed=%" PRId64 " takeover=%" PRId64
             " from=%s",
             r->id, state, r->led_since_ms ? r->led_since_ms : wall_ms(), wall_ms(),
             r->takeover_ms, *r->took_from ? r->took_from : "-");
}

/* The lease given up: a standby takes it at its next look. */
static void release_value(replica_t *r, char *out, size_t len)
{
    snprintf(out, len,
             "replica=%s state=released since=%" PRId64 " takeover=%" PRId64 " from=%s", r->id,
             wall_ms(), r->takeover_ms, *r->took_from ? r->took_from : "-");
}

static void set_leading(replica_t *r, bool leading)
{
    if (leading) {
        r->state = S_LEADING;
        r->led_since_ms = wall_ms();
        log_warn("limiter replica leads: answering checks", "replica=%s applied_seq=%" PRIu64
                 " from=%s", r->id, r->applied_seq, *r->took_from ? r->took_from : "-");
    } else {
        r->led_since_ms = 0;
    }
    if (r->hooks.leading)
        r->hooks.leading(r->hooks.arg, leading);
}

/* Leading or catching up, without a renewal for too long (or the lease is someone else's):
 * stop answering at once. */
static void step_down(replica_t *r, const char *why)
{
    bool was_leading = r->state == S_LEADING;
    log_warn("limiter replica stops answering", "replica=%s reason=\"%s\"", r->id, why);
    r->state = S_STANDBY;
    r->seen_rev = r->my_rev;
    r->seen_at_ms = mono_ms();
    if (was_leading)
        set_leading(r, false);
}

static void maybe_lead(replica_t *r)
{
    if (r->state == S_CATCHING_UP && r->target_seq != UINT64_MAX &&
        r->applied_seq >= r->target_seq)
        set_leading(r, true);
}

/* The first time the stream is applied up to where it was when this replica began to
 * follow it: ready (and a standby may look at the lease from now on). */
static void check_caught_up(replica_t *r)
{
    if (r->state == S_CONNECTING || r->caught_up_once || r->applied_seq < r->target_seq)
        return;
    r->caught_up_once = true;
    log_info("limiter replica caught up with the stream", "replica=%s seq=%" PRIu64, r->id,
             r->applied_seq);
}

static void follow_cb(void *arg, const char *subject, const void *data, size_t len, uint64_t seq,
                      int64_t time_ms)
{
    replica_t *r = arg;
    if (r->state == S_STOPPED || seq <= r->applied_seq)
        return; /* a repeat after the ordered consumer was made again */
    r->applied_seq = seq;
    if (r->hooks.apply)
        r->hooks.apply(r->hooks.arg, subject, data, len, time_ms, r->state != S_LEADING);
    check_caught_up(r);
    maybe_lead(r);
}

static void after_setup(replica_t *r, job_t *j)
{
    if (j->restart) {
        log_warn("the stream no longer holds what follows the last message applied (made "
                 "anew, or aged past it): following it from its start",
                 "replica=%s applied_seq=%" PRIu64 " last_seq=%" PRIu64, r->id, r->applied_seq,
                 j->last_seq);
        r->applied_seq = 0;
        r->last_job_ms = 0; /* set up again at the next tick */
        return;
    }
    if (!j->ok) {
        if (strcmp(r->error, j->err) != 0)
            log_warn("JetStream not ready, retrying", "error=\"%s\"", j->err);
        snprintf(r->error, sizeof r->error, "%s", j->err);
        if (j->kv)
            kvStore_Destroy(j->kv);
        return;
    }
    r->kv = j->kv;
    r->follow = j->follow;
    r->failures = 0;
    r->target_seq = j->last_seq;
    r->state = S_STANDBY;
    r->seen_rev = 0;
    *r->error = '\0';
    log_info("following the limiter stream", "replica=%s stream=%s last_seq=%" PRIu64, r->id,
             BUS_STREAM_LIMITER, j->last_seq);
    check_caught_up(r);
}

static void take_lease(replica_t *r, uint64_t rev, const char *from)
{
    job_t *j = job_start(r, JOB_TAKE);
    if (!j)
        return;
    j->rev = rev;
    if (from) { /* NULL: taken back, not over */
        snprintf(r->took_from, sizeof r->took_from, "%s", from);
        r->takeover_ms = wall_ms();
    }
    lease_value(r, j->value, sizeof j->value, "leading");
    job_queue(r, j);
}

static void after_watch(replica_t *r, job_t *j)
{
    if (r->state != S_STANDBY)
        return;
    if (!j->ok) {
        snprintf(r->error, sizeof r->error, "%s", j->err);
        return;
    }
    *r->error = '\0';
    uint64_t now = mono_ms();
    if (!j->found) {
        take_lease(r, 0, "-");
        return;
    }
    char holder[ID_MAX];
    value_holder(j->found_value, holder, sizeof holder);
    if (strstr(j->found_value, "state=released")) {
        take_lease(r, j->found_rev, holder);
        return;
    }
    /* Still ours as we last wrote it (this replica stopped answering when it could not
     * renew: frozen, or NATS away): nobody else took it, take it back at once. */
    if (r->my_rev && j->found_rev == r->my_rev && strcmp(holder, r->id) == 0) {
        take_lease(r, j->found_rev, NULL);
        return;
    }
    if (j->found_rev != r->seen_rev) {
        r->seen_rev = j->found_rev;
        r->seen_at_ms = now;
        snprintf(r->seen_holder, sizeof r->seen_holder, "%s", holder);
        return;
    }
    if (now - r->seen_at_ms >= REPLICA_LEASE_MS) {
        log_warn("limiter lease not renewed: taking over", "replica=%s holder=%s revision=%" PRIu64
                 " unchanged_ms=%" PRIu64, r->id, holder, j->found_rev, now - r->seen_at_ms);
        take_lease(r, j->found_rev, holder);
    }
}

static void after_take(replica_t *r, job_t *j)
{
    if (r->state == S_STOPPED)
        return; /* stopping while it was taken: it runs out in REPLICA_LEASE_MS */
    if (!j->ok) {
        log_info("limiter lease not taken", "replica=%s error=\"%s\"", r->id, j->err);
        r->seen_rev = 0; /* look again */
        return;
    }
    r->my_rev = j->new_rev;
    r->renewed_ms = j->started_ms;
    r->target_seq = j->last_seq;
    r->takeovers++;
    r->state = S_CATCHING_UP;
    log_info("limiter lease taken, catching up", "replica=%s revision=%" PRIu64
             " applied_seq=%" PRIu64 " last_seq=%" PRIu64, r->id, r->my_rev, r->applied_seq,
             r->target_seq);
    maybe_lead(r);
}

static void after_renew(replica_t *r, job_t *j)
{
    if (r->state != S_LEADING && r->state != S_CATCHING_UP)
        return;
    if (j->ok) {
        r->my_rev = j->new_rev;
        r->renewed_ms = j->started_ms;
        if (j->history_ms && j->history_ok)
            log_info("limiter stream keeps messages", "max_age_s=%" PRId64,
                     j->history_ms / 1000);
        else if (j->history_ms)
            r->history_set_ms = 0; /* again at the next renewal */
        if (r->target_seq == UINT64_MAX && j->want_seq && j->last_seq)
            r->target_seq = j->last_seq;
        maybe_lead(r);
        return;
    }
    if (j->history_ms)
        r->history_set_ms = 0;
    char holder[ID_MAX] = "";
    if (j->found)
        value_holder(j->found_value, holder, sizeof holder);
    if (j->found && strcmp(holder, r->id) != 0) {
        char why[ID_MAX + 40];
        snprintf(why, sizeof why, "the lease is %s's now", holder);
        step_down(r, why);
    } else {
        snprintf(r->error, sizeof r->error, "%s", j->err);
    }
}

/* Counts JetStream failures in a row; past FAILURES_RESETUP the replica stops answering and
 * sets the stream, the bucket and its follower up again. A refused compare-and-set is an
 * answer, not a failure. */
static void note_outcome(replica_t *r, const job_t *j)
{
    const char *why = NULL;
    if (r->state == S_STOPPED)
        return;
    if (j->stream_missing)
        why = "the limiter stream is gone: setting it up again";
    else if (j->ok || j->found)
        r->failures = 0;
    else if (++r->failures >= FAILURES_RESETUP)
        why = "JetStream keeps failing: setting the stream and bucket up again";
    if (!why)
        return;
    log_warn(why, "replica=%s error=\"%s\"", r->id, j->err);
    if (r->state == S_LEADING || r->state == S_CATCHING_UP)
        step_down(r, why);
    if (r->follow)
        bus_unfollow(r->bus, r->follow);
    r->follow = NULL;
    if (r->kv)
        kvStore_Destroy(r->kv);
    r->kv = NULL;
    r->state = S_CONNECTING;
    r->failures = 0;
    r->last_job_ms = 0;
}

static void stop_finish(replica_t *r)
{
    void (*done)(void *) = r->stop_done;
    r->stop_done = NULL;
    if (done)
        done(r->stop_arg);
}

static void replica_free(replica_t *r);

static void after_cb(uv_work_t *req, int status)
{
    (void)status;
    job_t *j = req->data;
    replica_t *r = j->r;
    r->job = NULL;
    if (r->dead) {
        if (j->kv)
            kvStore_Destroy(j->kv);
        if (j->follow)
            bus_unfollow(r->bus, j->follow);
        free(j);
        replica_free(r);
        return;
    }
    switch (j->kind) {
    case JOB_SETUP: after_setup(r, j); break;
    case JOB_WATCH: after_watch(r, j); break;
    case JOB_TAKE: after_take(r, j); break;
    case JOB_RENEW: after_renew(r, j); break;
    case JOB_RELEASE:
        log_info(j->ok ? "limiter lease given up" : "limiter lease not given up", "replica=%s%s%s",
                 r->id, j->ok ? "" : " error=", j->ok ? "" : j->err);
        stop_finish(r);
        break;
    }
    if (j->kind == JOB_WATCH || j->kind == JOB_RENEW || j->kind == JOB_TAKE)
        note_outcome(r, j);
    free(j);
    if (r->release_wanted && !r->job) {
        r->release_wanted = false;
        job_t *rel = job_start(r, JOB_RELEASE);
        if (!rel) {
            stop_finish(r);
            return;
        }
        rel->rev = r->my_rev;
        release_value(r, rel->value, sizeof rel->value);
        job_queue(r, rel);
    }
}

static void tick_cb(uv_timer_t *t)
{
    replica_t *r = t->data;
    uint64_t now = mono_ms();
    if ((r->state == S_LEADING || r->state == S_CATCHING_UP) &&
        now - r->renewed_ms > REPLICA_SERVE_MS)
        step_down(r, "no lease renewal succeeded in time");
    if (r->job || r->state == S_STOPPED)
        return;
    job_t *j = NULL;
    switch (r->state) {
    case S_CONNECTING:
        if (r->last_job_ms && now - r->last_job_ms < SETUP_RETRY_MS)
            return;
        if (r->follow) { /* a follower from an earlier attempt */
            bus_unfollow(r->bus, r->follow);
            r->follow = NULL;
        }
        j = job_start(r, JOB_SETUP);
        if (j)
            j->applied_seq = r->applied_seq;
        break;
    case S_STANDBY:
        if (now - r->last_job_ms < REPLICA_WATCH_MS || !r->caught_up_once)
            return;
        j = job_start(r, JOB_WATCH);
        if (j)
            j->check_stream = ++r->looks % STREAM_CHECK_LOOKS == 0;
        break;
    case S_CATCHING_UP:
    case S_LEADING:
        if (now - r->last_job_ms < REPLICA_RENEW_MS)
            return;
        j = job_start(r, JOB_RENEW);
        if (j) {
            j->check_stream = ++r->looks % STREAM_CHECK_LOOKS == 0;
            j->rev = r->my_rev;
            j->want_seq = r->target_seq == UINT64_MAX;
            if (r->state == S_LEADING && r->history_ms && r->history_ms != r->history_set_ms)
                j->history_ms = r->history_set_ms = r->history_ms;
            lease_value(r, j->value, sizeof j->value,
                        r->state == S_LEADING ? "leading" : "catching-up");
        }
        break;
    case S_STOPPED:
        return;
    }
    if (j)
        job_queue(r, j);
}

replica_t *replica_create(uv_loop_t *loop, bus_t *bus, int stream_replicas,
                          const replica_hooks_t *hooks)
{
    replica_t *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->loop = loop;
    r->bus = bus;
    r->hooks = *hooks;
    r->stream_replicas = stream_replicas > 0 ? stream_replicas : 1;
    char host[64] = "";
    gethostname(host, sizeof host - 1);
    unsigned rnd = (unsigned)(uv_hrtime() ^ ((uint64_t)getpid() << 16)) & 0xffffu;
    snprintf(r->id, sizeof r->id, "%s:%d:%04x", host, (int)getpid(), rnd);
    r->state = S_CONNECTING;
    uv_timer_init(loop, &r->timer);
    r->timer.data = r;
    r->timer_open = true;
    uv_timer_start(&r->timer, tick_cb, 0, TICK_MS);
    return r;
}

void replica_set_history(replica_t *r, int64_t max_age_ms)
{
    if (r && max_age_ms > 0)
        r->history_ms = max_age_ms;
}

bool replica_leading(const replica_t *r)
{
    return r && r->state == S_LEADING;
}

const char *replica_id(const replica_t *r)
{
    return r ? r->id : "";
}

bool replica_ready(const replica_t *r, char *why, size_t why_len)
{
    if (r && r->state != S_CONNECTING && r->caught_up_once)
        return true;
    if (!r || r->state == S_CONNECTING)
        snprintf(why, why_len, "JetStream: %s", r && *r->error ? r->error : "connecting");
    else
        snprintf(why, why_len, "replaying the limiter stream (%" PRIu64 " of %" PRIu64 ")",
                 r->applied_seq, r->target_seq);
    return false;
}

void replica_status(const replica_t *r, replica_status_t *st)
{
    st->state = state_name(r->state);
    st->id = r->id;
    st->applied_seq = r->applied_seq;
    st->target_seq = r->target_seq;
    st->takeovers = r->takeovers;
    st->led_since_ms = r->led_since_ms;
    st->error = r->error;
}

void replica_stop(replica_t *r, void (*done)(void *arg), void *arg)
{
    if (!r) {
        done(arg);
        return;
    }
    bool held = r->state == S_LEADING || r->state == S_CATCHING_UP;
    if (r->state == S_LEADING)
        set_leading(r, false);
    r->state = S_STOPPED;
    if (r->follow) {
        bus_unfollow(r->bus, r->follow);
        r->follow = NULL;
    }
    if (!held || !r->kv) {
        done(arg);
        return;
    }
    r->stop_done = done;
    r->stop_arg = arg;
    if (r->job) {
        r->release_wanted = true; /* after the job in flight */
        return;
    }
    job_t *j = job_start(r, JOB_RELEASE);
    if (!j) {
        stop_finish(r);
        return;
    }
    j->rev = r->my_rev;
    release_value(r, j->value, sizeof j->value);
    job_queue(r, j);
}

bool replica_busy(const replica_t *r)
{
    return r && r->job;
}

static void timer_closed_cb(uv_handle_t *h)
{
    replica_t *r = h->data;
    r->timer_open = false;
    if (!r->job)
        free(r);
}

static void replica_free(replica_t *r)
{
    if (r->kv)
        kvStore_Destroy(r->kv);
    r->kv = NULL;
    if (!r->timer_open)
        free(r);
}

void replica_destroy(replica_t **rp)
{
    replica_t *r = rp ? *rp : NULL;
    if (!r)
        return;
    *rp = NULL;
    r->dead = true;
    r->state = S_STOPPED;
    if (r->follow)
        bus_unfollow(r->bus, r->follow);
    r->follow = NULL;
    uv_timer_stop(&r->timer);
    if (!r->job && r->kv) {
        kvStore_Destroy(r->kv);
        r->kv = NULL;
    }
    uv_close((uv_handle_t *)&r->timer, timer_closed_cb);
}
