/* "Mailbox changed" on the bus (subject postern.mailbox.changed, message MailboxChanged in
 * proto/postern.proto): publishing it after a committed change, and a per-process registry
 * of the sessions that want to hear about a user's mailboxes (imapd's IDLE and NOOP).
 *
 * The registry holds one bus subscription for the whole process, made at the first watch,
 * and hands each event to the watchers of its user (a hash table by address: thousands of
 * sessions cost one lookup per event). Everything runs on the loop thread. */
#ifndef POSTERN_MAILWATCH_H
#define POSTERN_MAILWATCH_H

#include <stdint.h>

#include "bus/bus.h"

/* The values of MailboxChanged.Kind. */
typedef enum mailwatch_kind {
    MAILWATCH_NEW = 1,       /* messages arrived */
    MAILWATCH_FLAGS = 2,     /* flags changed */
    MAILWATCH_EXPUNGE = 3,   /* messages removed */
    MAILWATCH_MAILBOXES = 4, /* mailboxes created, deleted, renamed, (un)subscribed */
} mailwatch_kind_t;

typedef struct mailwatch_event {
    const char *user;   /* lower-case address */
    int64_t mailbox_id; /* 0: not known */
    int64_t modseq;     /* 0: not known */
    mailwatch_kind_t kind;
} mailwatch_event_t;

/* Publishes one event (user is lower-cased). Returns 0, or -1 (not connected, or a bad
 * argument): a missed event only delays what a session sees until its next poll. */
int mailwatch_publish_changed(bus_t *bus, const char *user, int64_t mailbox_id, int64_t modseq,
                              mailwatch_kind_t kind);

typedef struct mailwatch mailwatch_t;
typedef struct mailwatch_watch mailwatch_watch_t;
/* ev is valid during the call. The callback may unwatch any watch, its own included. */
typedef void (*mailwatch_cb)(void *arg, const mailwatch_event_t *ev);

/* bus may be NULL (nothing is ever received then: tests, tools). */
mailwatch_t *mailwatch_create(bus_t *bus);
/* Frees the registry and every watch still in it. The bus cannot drop a subscription, so
 * destroy the bus first (bus_destroy stops every delivery), then the registry. */
void mailwatch_destroy(mailwatch_t **mw);

/* Calls cb for every event about user (compared lower-case) until mailwatch_unwatch().
 * Returns NULL when memory runs out or the subscription cannot be made. */
mailwatch_watch_t *mailwatch_watch(mailwatch_t *mw, const char *user, mailwatch_cb cb, void *arg);
/* *w becomes NULL; harmless on NULL. */
void mailwatch_unwatch(mailwatch_watch_t **w);
/* Hands an event to the watchers of its user, as a received one is: for tests and for
 * a process that wants its own sessions told before the bus echoes the event back. */
void mailwatch_dispatch(mailwatch_t *mw, const mailwatch_event_t *ev);

#endif
