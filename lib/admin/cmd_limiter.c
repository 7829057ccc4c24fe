/* mailctl limiter status (and the limiter part of hamr status): which limiter replica
 * answers, since when, the last takeover, and the state of the JetStream stream and bucket
 * that hold the counters and the lease (services/limiter/replica.h). Read-only: NATS only. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "bus/subjects.h"
#include "admin/admin.h"

#define STATUS_TIMEOUT_MS 2000

typedef struct lease {
    bool found;
    uint64_t revision;
    int64_t written_ms; /* when the bucket stored the value (its last renewal) */
    char replica[160], state[32], from[160];
    int64_t since_ms, takeover_ms;
} lease_t;

static int64_t wall_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static const char *iso(int64_t ms, char *buf, size_t len)
{
    if (ms <= 0) {
        snprintf(buf, len, "-");
        return buf;
    }
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

/* "key=value" of the lease's text, into out ("" when absent). */
static void field(const char *text, const char *key, char *out, size_t len)
{
    size_t kl = strlen(key);
    const char *p = text;
    *out = '\0';
    while ((p = strstr(p, key))) {
        if ((p == text || p[-1] == ' ') && p[kl] == '=') {
            p += kl + 1;
            size_t n = strcspn(p, " ");
            snprintf(out, len, "%.*s", (int)(n < len ? n : len - 1), p);
            return;
        }
        p += kl;
    }
}

static int64_t field_ms(const char *text, const char *key)
{
    char v[32];
    field(text, key, v, sizeof v);
    return strtoll(v, NULL, 10);
}

static void lease_read(kvStore *kv, lease_t *l, char *err, size_t err_len)
{
    kvEntry *e = NULL;
    natsStatus s = kvStore_Get(&e, kv, BUS_BUCKET_LIMITER_LEADER);
    if (s == NATS_NOT_FOUND)
        return;
    if (s != NATS_OK) {
        snprintf(err, err_len, "the lease: %s", natsStatus_GetText(s));
        return;
    }
    char text[512];
    snprintf(text, sizeof text, "%.*s", kvEntry_ValueLen(e), (const char *)kvEntry_Value(e));
    l->found = true;
    l->revision = kvEntry_Revision(e);
    l->written_ms = kvEntry_Created(e) / 1000000;
    field(text, "replica", l->replica, sizeof l->replica);
    field(text, "state", l->state, sizeof l->state);
    field(text, "from", l->from, sizeof l->from);
    l->since_ms = field_ms(text, "since");
    l->takeover_ms = field_ms(text, "takeover");
    kvEntry_Destroy(e);
}

static void peers_json(const jsClusterInfo *c)
{
    fprintf(ctl_out(), "\"cluster\":");
    if (!c) {
        fprintf(ctl_out(), "null");
        return;
    }
    fprintf(ctl_out(), "{\"name\":");
    json_str(ctl_out(), c->Name);
    fprintf(ctl_out(), ",\"leader\":");
    json_str(ctl_out(), c->Leader);
    fprintf(ctl_out(), ",\"replicas\":[");
    for (int i = 0; i < c->ReplicasLen; i++) {
        const jsPeerInfo *p = c->Replicas[i];
        fprintf(ctl_out(), "%s{\"name\":", i ? "," : "");
        json_str(ctl_out(), p->Name);
        fprintf(ctl_out(), ",\"current\":%s,\"offline\":%s,\"lag\":%" PRIu64 "}", p->Current ? "true" : "false",
               p->Offline ? "true" : "false", p->Lag);
    }
    fprintf(ctl_out(), "]}");
}

static void peers_text(const jsClusterInfo *c)
{
    if (!c || !c->Leader) {
        fprintf(ctl_out(), "one server");
        return;
    }
    fprintf(ctl_out(), "leader %s", c->Leader);
    for (int i = 0; i < c->ReplicasLen; i++) {
        const jsPeerInfo *p = c->Replicas[i];
        fprintf(ctl_out(), ", %s %s", p->Name, p->Offline ? "offline" : p->Current ? "current" : "behind");
        if (p->Lag)
            fprintf(ctl_out(), " (lag %" PRIu64 ")", p->Lag);
    }
}

/* The status on ctl_out(): as the members of a JSON object ("lease", "stream", "bucket",
 * "error"; the caller writes the braces) or as text. Returns CTL_OK, or CTL_DB when NATS
 * could not be asked (the error is in the output too). */
int limiter_status_print(ctl_t *ctl, bool json)
{
    char err[512] = "";
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    kvStore *kv = NULL;
    jsStreamInfo *si = NULL, *ki = NULL;
    lease_t lease = { 0 };
    natsStatus s = ctl_nats_connect(ctl, STATUS_TIMEOUT_MS, &nc, err, sizeof err);
    if (s == NATS_OK) {
        jsOptions o;
        jsOptions_Init(&o);
        o.Wait = STATUS_TIMEOUT_MS;
        s = natsConnection_JetStream(&js, nc, &o);
    }
    if (s == NATS_OK) {
        jsErrCode je = 0;
        natsStatus ss = js_GetStreamInfo(&si, js, BUS_STREAM_LIMITER, NULL, &je);
        if (ss != NATS_OK && ss != NATS_NOT_FOUND)
            snprintf(err, sizeof err, "the stream: %s", natsStatus_GetText(ss));
        js_GetStreamInfo(&ki, js, "KV_" BUS_BUCKET_LIMITER, NULL, &je);
        if (js_KeyValue(&kv, js, BUS_BUCKET_LIMITER) == NATS_OK)
            lease_read(kv, &lease, err, sizeof err);
    }
    int64_t now = wall_ms();
    bool leading = lease.found && strcmp(lease.state, "released") != 0;
    if (json) {
        fprintf(ctl_out(), "\"lease\":");
        if (!lease.found) {
            fprintf(ctl_out(), "null");
        } else {
            fprintf(ctl_out(), "{\"replica\":");
            json_str(ctl_out(), lease.replica);
            fprintf(ctl_out(), ",\"state\":");
            json_str(ctl_out(), lease.state);
            fprintf(ctl_out(), ",\"revision\":%" PRIu64 ",\"since_ms\":%" PRId64 ",\"renewed_ms\":%" PRId64
                   ",\"renewed_ago_ms\":%" PRId64 ",\"takeover_ms\":%" PRId64 ",\"takeover_from\":",
                   lease.revision, lease.since_ms, lease.written_ms, now - lease.written_ms,
                   lease.takeover_ms);
            json_str(ctl_out(), *lease.from && strcmp(lease.from, "-") ? lease.from : NULL);
            fprintf(ctl_out(), ",\"owns\":%s}", leading ? "\"every key\"" : "null");
        }
        fprintf(ctl_out(), ",\"stream\":");
        if (!si) {
            fprintf(ctl_out(), "null");
        } else {
            fprintf(ctl_out(), "{\"name\":\"%s\",\"messages\":%" PRIu64 ",\"bytes\":%" PRIu64
                   ",\"first_seq\":%" PRIu64 ",\"last_seq\":%" PRIu64 ",\"first_ms\":%" PRId64
                   ",\"max_age_s\":%" PRId64 ",\"replicas\":%d,\"followers\":%" PRId64 ",",
                   BUS_STREAM_LIMITER, si->State.Msgs, si->State.Bytes, si->State.FirstSeq,
                   si->State.LastSeq, si->State.FirstTime / 1000000,
                   si->Config->MaxAge / 1000000000, (int)si->Config->Replicas, si->State.Consumers);
            peers_json(si->Cluster);
            fprintf(ctl_out(), "}");
        }
        fprintf(ctl_out(), ",\"bucket\":");
        if (!ki) {
            fprintf(ctl_out(), "null");
        } else {
            fprintf(ctl_out(), "{\"name\":\"%s\",\"replicas\":%d,", BUS_BUCKET_LIMITER,
                   (int)ki->Config->Replicas);
            peers_json(ki->Cluster);
            fprintf(ctl_out(), "}");
        }
        fprintf(ctl_out(), ",\"error\":");
        json_str(ctl_out(), *err ? err : NULL);
    } else {
        char t1[32], t2[32];
        if (*err && !si && !lease.found)
            fprintf(ctl_out(), "limiter: NATS could not be asked: %s\n", err);
        else if (!lease.found)
            fprintf(ctl_out(), "limiter: no replica has led yet (no lease in the bucket %s)\n",
                   BUS_BUCKET_LIMITER);
        else if (!leading)
            fprintf(ctl_out(), "limiter: no replica answers: %s gave the lease up at %s\n", lease.replica,
                   iso(lease.since_ms, t1, sizeof t1));
        else
            fprintf(ctl_out(), "limiter: replica %s answers for every key since %s; lease renewed %.1f s "
                   "ago (revision %" PRIu64 ")%s\n",
                   lease.replica, iso(lease.since_ms, t1, sizeof t1),
                   (double)(now - lease.written_ms) / 1000, lease.revision,
                   now - lease.written_ms > 1500 ? ": NOT RENEWED, a standby takes over" : "");
        if (lease.found && *lease.from && strcmp(lease.from, "-"))
            fprintf(ctl_out(), "last takeover: %s, from %s\n", iso(lease.takeover_ms, t2, sizeof t2),
                   lease.from);
        else if (lease.found)
            fprintf(ctl_out(), "last takeover: %s (the first lease)\n", iso(lease.takeover_ms, t2, sizeof t2));
        if (si) {
            fprintf(ctl_out(), "stream %s: %" PRIu64 " messages, %" PRIu64 " bytes, sequence %" PRIu64
                   "..%" PRIu64 ", oldest %s, kept %" PRId64 " s, followed by %" PRId64
                   " replica(s); %d copies: ",
                   BUS_STREAM_LIMITER, si->State.Msgs, si->State.Bytes, si->State.FirstSeq,
                   si->State.LastSeq, iso(si->State.FirstTime / 1000000, t1, sizeof t1),
                   si->Config->MaxAge / 1000000000, si->State.Consumers,
                   (int)si->Config->Replicas);
            peers_text(si->Cluster);
            fprintf(ctl_out(), "\n");
        } else if (!*err || si || lease.found) {
            fprintf(ctl_out(), "stream %s: not created yet (no limiter has started)\n", BUS_STREAM_LIMITER);
        }
        if (ki) {
            fprintf(ctl_out(), "bucket %s: %d copies: ", BUS_BUCKET_LIMITER, (int)ki->Config->Replicas);
            peers_text(ki->Cluster);
            fprintf(ctl_out(), "\n");
        }
        if (*err && (si || lease.found))
            fprintf(ctl_out(), "warning: %s\n", err);
    }
    jsStreamInfo_Destroy(si);
    jsStreamInfo_Destroy(ki);
    kvStore_Destroy(kv);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    /* No nats_Close(): see ctl_announce() (a crash at exit with TLS to NATS and to
     * PostgreSQL). */
    return s == NATS_OK ? CTL_OK : CTL_DB;
}

int cmd_limiter_status(ctl_t *ctl, char **args, int nargs)
{
    (void)args;
    (void)nargs;
    if (ctl->json)
        fprintf(ctl_out(), "{");
    int rc = limiter_status_print(ctl, ctl->json);
    if (ctl->json)
        fprintf(ctl_out(), "}\n");
    return rc;
}
