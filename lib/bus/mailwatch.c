/* The mailbox-changed registry: users in an open hash table with chaining (grown at a
 * load of 1), each user with a list of watches. A watch removed while events are being
 * dispatched is only marked and unlinked afterwards, so a callback may unwatch anything. */
#include "bus/mailwatch.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "bus/subjects.h"
#include "postern.pb-c.h"

#define MAILWATCH_USER_MAX 320

typedef struct mw_user mw_user_t;

struct mailwatch_watch {
    mailwatch_t *mw;
    mw_user_t *user;
    mailwatch_cb cb;
    void *arg;
    bool dead;
    mailwatch_watch_t *prev, *next;
};

struct mw_user {
    char *name;
    uint64_t hash;
    mailwatch_watch_t *watches;
    mw_user_t *next; /* in its bucket */
};

struct mailwatch {
    bus_t *bus;
    bool subscribed;
    mw_user_t **buckets;
    size_t nbuckets, nusers;
    unsigned dispatching; /* nesting depth of mailwatch_dispatch */
    bool has_dead;
};

static void lower_copy(char *out, size_t cap, const char *in)
{
    size_t i = 0;
    for (; in[i] && i + 1 < cap; i++)
        out[i] = (char)tolower((unsigned char)in[i]);
    out[i] = '\0';
}

/* FNV-1a, 64 bits. */
static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return h;
}

int mailwatch_publish_changed(bus_t *bus, const char *user, int64_t mailbox_id, int64_t modseq,
                              mailwatch_kind_t kind)
{
    if (!bus || !user || !*user || strlen(user) >= MAILWATCH_USER_MAX)
        return -1;
    char lower[MAILWATCH_USER_MAX];
    lower_copy(lower, sizeof lower, user);
    Postern__MailboxChanged ev = POSTERN__MAILBOX_CHANGED__INIT;
    ev.user = lower;
    ev.mailbox_id = mailbox_id;
    ev.modseq = modseq;
    ev.kind = (Postern__MailboxChanged__Kind)kind;
    return bus_publish_msg(bus, BUS_SUBJECT_MAILBOX_CHANGED, &ev.base);
}

mailwatch_t *mailwatch_create(bus_t *bus)
{
    mailwatch_t *mw = calloc(1, sizeof *mw);
    if (!mw)
        return NULL;
    mw->bus = bus;
    mw->nbuckets = 64;
    mw->buckets = calloc(mw->nbuckets, sizeof *mw->buckets);
    if (!mw->buckets) {
        free(mw);
        return NULL;
    }
    return mw;
}

static void user_free(mw_user_t *u)
{
    for (mailwatch_watch_t *w = u->watches, *next; w; w = next) {
        next = w->next;
        free(w);
    }
    free(u->name);
    free(u);
}

void mailwatch_destroy(mailwatch_t **mwp)
{
    if (!mwp || !*mwp)
        return;
    mailwatch_t *mw = *mwp;
    for (size_t i = 0; i < mw->nbuckets; i++) {
        for (mw_user_t *u = mw->buckets[i], *next; u; u = next) {
            next = u->next;
            user_free(u);
        }
    }
    free(mw->buckets);
    free(mw);
    *mwp = NULL;
}

static mw_user_t *user_find(mailwatch_t *mw, const char *name, uint64_t h)
{
    for (mw_user_t *u = mw->buckets[h % mw->nbuckets]; u; u = u->next)
        if (u->hash == h && strcmp(u->name, name) == 0)
            return u;
    return NULL;
}

static void grow(mailwatch_t *mw)
{
    size_t n = mw->nbuckets * 2;
    mw_user_t **b = calloc(n, sizeof *b);
    if (!b)
        return; /* longer chains, still correct */
    for (size_t i = 0; i < mw->nbuckets; i++) {
        for (mw_user_t *u = mw->buckets[i], *next; u; u = next) {
            next = u->next;
            u->next = b[u->hash % n];
            b[u->hash % n] = u;
        }
    }
    free(mw->buckets);
    mw->buckets = b;
    mw->nbuckets = n;
}

static void user_remove(mailwatch_t *mw, mw_user_t *u)
{
    mw_user_t **p = &mw->buckets[u->hash % mw->nbuckets];
    while (*p != u)
        p = &(*p)->next;
    *p = u->next;
    mw->nusers--;
    user_free(u);
}

/* Unlinks the dead watches (after a dispatch) and the users left without watches. */
static void sweep(mailwatch_t *mw)
{
    mw->has_dead = false;
    for (size_t i = 0; i < mw->nbuckets; i++) {
        for (mw_user_t *u = mw->buckets[i], *next; u; u = next) {
            next = u->next;
            for (mailwatch_watch_t *w = u->watches, *wn; w; w = wn) {
                wn = w->next;
                if (!w->dead)
                    continue;
                if (w->prev)
                    w->prev->next = w->next;
                else
                    u->watches = w->next;
                if (w->next)
                    w->next->prev = w->prev;
                free(w);
            }
            if (!u->watches)
                user_remove(mw, u);
        }
    }
}

void mailwatch_dispatch(mailwatch_t *mw, const mailwatch_event_t *ev)
{
    if (!mw || !ev || !ev->user)
        return;
    char name[MAILWATCH_USER_MAX];
    lower_copy(name, sizeof name, ev->user);
    mw_user_t *u = user_find(mw, name, hash_str(name));
    if (!u)
        return;
    mw->dispatching++;
    /* Watches added during the dispatch go to the head of the list and are not called. */
    for (mailwatch_watch_t *w = u->watches; w; w = w->next)
        if (!w->dead)
            w->cb(w->arg, ev);
    mw->dispatching--;
    if (!mw->dispatching && mw->has_dead)
        sweep(mw);
}

static void bus_changed_cb(void *arg, const char *subject, const void *data, size_t len,
                           const char *reply)
{
    (void)subject;
    (void)reply;
    mailwatch_t *mw = arg;
    Postern__MailboxChanged *m = postern__mailbox_changed__unpack(NULL, len, data);
    if (!m) {
        log_warn("bad mailbox event dropped", "subject=%s bytes=%zu",
                 BUS_SUBJECT_MAILBOX_CHANGED, len);
        return;
    }
    if (m->user && *m->user) {
        mailwatch_event_t ev = {
            .user = m->user,
            .mailbox_id = m->mailbox_id,
            .modseq = m->modseq,
            .kind = (mailwatch_kind_t)m->kind,
        };
        mailwatch_dispatch(mw, &ev);
    }
    postern__mailbox_changed__free_unpacked(m, NULL);
}

mailwatch_watch_t *mailwatch_watch(mailwatch_t *mw, const char *user, mailwatch_cb cb, void *arg)
{
    if (!mw || !user || !*user || !cb || strlen(user) >= MAILWATCH_USER_MAX)
        return NULL;
    if (!mw->subscribed && mw->bus) {
        if (bus_subscribe(mw->bus, BUS_SUBJECT_MAILBOX_CHANGED, bus_changed_cb, mw) < 0)
            return NULL;
        mw->subscribed = true;
    }
    char name[MAILWATCH_USER_MAX];
    lower_copy(name, sizeof name, user);
    uint64_t h = hash_str(name);
    mw_user_t *u = user_find(mw, name, h);
    if (!u) {
        u = calloc(1, sizeof *u);
        if (!u || !(u->name = strdup(name))) {
            free(u);
            return NULL;
        }
        u->hash = h;
        if (mw->nusers >= mw->nbuckets && !mw->dispatching)
            grow(mw);
        u->next = mw->buckets[h % mw->nbuckets];
        mw->buckets[h % mw->nbuckets] = u;
        mw->nusers++;
    }
    mailwatch_watch_t *w = calloc(1, sizeof *w);
    if (!w) {
        if (!u->watches && !mw->dispatching)
            user_remove(mw, u);
        return NULL;
    }
    w->mw = mw;
    w->user = u;
    w->cb = cb;
    w->arg = arg;
    w->next = u->watches;
    if (u->watches)
        u->watches->prev = w;
    u->watches = w;
    return w;
}

void mailwatch_unwatch(mailwatch_watch_t **wp)
{
    if (!wp || !*wp)
        return;
    mailwatch_watch_t *w = *wp;
    *wp = NULL;
    mailwatch_t *mw = w->mw;
    if (mw->dispatching) {
        w->dead = true;
        mw->has_dead = true;
        return;
    }
    mw_user_t *u = w->user;
    if (w->prev)
        w->prev->next = w->next;
    else
        u->watches = w->next;
    if (w->next)
        w->next->prev = w->prev;
    free(w);
    if (!u->watches)
        user_remove(mw, u);
}
