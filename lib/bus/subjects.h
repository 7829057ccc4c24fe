/* Every subject on the Postern bus, in one place: who publishes, who subscribes, and the
 * message of proto/postern.proto it carries. Code names a subject only through these; the
 * messages are packed and unpacked by lib/bus/events.h (and, for the limiter's client and
 * "mailbox changed", by lib/bus/lim.h and lib/bus/mailwatch.h).
 *
 * A request is answered on its reply subject (NATS inbox) with the message after "->". */
#ifndef POSTERN_SUBJECTS_H
#define POSTERN_SUBJECTS_H

/* ---- events -------------------------------------------------------------------------- */

/* AuthEvent. Every authentication outcome of a front end (lib/svc/fe_auth.c: smtpd, pop3d,
 * imapd) and of a web login (services/webd/auth.c, service web). Subscribed by the limiter
 * (failed logins count towards harvesting; the answering replica keeps the login history). */
#define BUS_SUBJECT_EVENT_AUTH "postern.event.auth"

/* MessageEvent. smtpd (services/smtpd/data.c), for every message PostgreSQL has committed.
 * Subscribed by the limiter (HAMR counts authenticated users' messages). */
#define BUS_SUBJECT_EVENT_MESSAGE "postern.event.message"

/* ConfigChanged. mailctl and webd (lib/admin/announce.c), after a committed change of the
 * configuration. Subscribed by every configuration cache (lib/bus/config.c: front ends,
 * notifier, relayd) and by the limiter, which reload at once. */
#define BUS_SUBJECT_CONFIG_CHANGED "postern.config.changed"

/* MailboxChanged. smtpd, pop3d, imapd and the notifier after a committed change of a
 * user's mailboxes (lib/bus/mailwatch.c). Subscribed by imapd (IDLE, NOOP). */
#define BUS_SUBJECT_MAILBOX_CHANGED "postern.mailbox.changed"

/* QueueAdded. smtpd (a message with relay recipients), the notifier (an alert for an
 * address outside the hosted domains) and relayd (a delivery notice), each after
 * PostgreSQL has committed the row in outbound_queue. Subscribed by relayd, which starts on
 * it at once instead of at its next poll of the table. */
#define BUS_SUBJECT_QUEUE_ADDED "postern.queue.added"

/* ---- the limiter ----------------------------------------------------------------------- */

/* AuthCheck -> CheckReply. Request from a front end (lib/bus/lim.c) before a password is
 * verified: may this client address (and account) try? Served by the limiter. */
#define BUS_SUBJECT_LIMITER_AUTH "postern.limiter.auth"

/* SendCheck -> CheckReply. Request from smtpd (lib/bus/lim.c): may this user send this
 * message now? An ALLOW reserves a slot. Served by the limiter. */
#define BUS_SUBJECT_LIMITER_SEND "postern.limiter.send"

/* SendRelease. smtpd (lib/bus/lim.c): the slot a SendCheck reserved was not used.
 * Subscribed by the limiter. */
#define BUS_SUBJECT_LIMITER_RELEASE "postern.limiter.release"

/* RcptFailure -> CheckReply. Request from smtpd (lib/bus/lim.c): an invalid local
 * recipient; the reply says how long to delay the answer, or that the client is blocked.
 * Served by the limiter. */
#define BUS_SUBJECT_LIMITER_RCPT "postern.limiter.rcpt"

/* BlockListRequest -> BlockList. Request from every front end (lib/bus/lim.c) at start and
 * every 30 seconds: the active blocks and exempt networks, in pages of at most about
 * 256 KiB (EV_BLOCK_PAGE_BYTES) in the order of the networks' text, each request naming
 * where the previous page ended (the exempt networks come with the first page). The front
 * end replaces its copy once the last page has come, with the postern.block.changed
 * broadcasts it received meanwhile applied on top (proto/postern.proto, BlockListRequest).
 * A request without paging gets the whole list in one reply. Served by the limiter. */
#define BUS_SUBJECT_LIMITER_BLOCKS "postern.limiter.blocks"

/* BlockChange. The limiter, when a block is added, lifted or expires. Subscribed by every
 * front end (lib/bus/lim.c keeps the local copy of blocks). */
#define BUS_SUBJECT_BLOCK_CHANGED "postern.block.changed"

/* AccountChange. The limiter, when an account's sending is disabled or enabled again.
 * No subscriber yet (smtpd learns it from its SendCheck replies). */
#define BUS_SUBJECT_ACCOUNT_CHANGED "postern.account.changed"

/* LimiterLog. The leading limiter replica, for each decision that changes its counters
 * (a reserved send slot, a counted invalid recipient), before it answers; a reserved slot
 * given back because the stream's acknowledgement never came goes on .reserve too. Nobody subscribes:
 * the stream below keeps them for the standby replicas and for a limiter starting. */
#define BUS_SUBJECT_LIMITER_LOG_RESERVE "postern.limiter.log.reserve"
#define BUS_SUBJECT_LIMITER_LOG_RCPT "postern.limiter.log.rcpt"
/* ... and for each lifted block and each account enabled again: the counters they clear. */
#define BUS_SUBJECT_LIMITER_LOG_FORGET "postern.limiter.log.forget"
#define BUS_SUBJECT_LIMITER_LOG_PREFIX "postern.limiter.log."
#define BUS_SUBJECT_LIMITER_LOG_ALL BUS_SUBJECT_LIMITER_LOG_PREFIX ">"

/* ---- JetStream ------------------------------------------------------------------------- */

/* The stream holding everything the limiter's counters are made of, in order: the events
 * postern.event.auth, postern.event.message, postern.limiter.release (captured as the front
 * ends publish them) and the leader's postern.limiter.log.*, for the longest interval a
 * limit counts over. Every limiter replica follows it (services/limiter/replica.c). */
#define BUS_STREAM_LIMITER "POSTERN_LIMITER"
/* The key-value bucket holding the limiter's lease (key "leader"): which replica answers. */
#define BUS_BUCKET_LIMITER "postern_limiter"
#define BUS_BUCKET_LIMITER_LEADER "leader"

/* Alert. The limiter, when a limit asks for the administrators to be told (queued while
 * the bus is down). Subscribed by the notifier, which mails them. */
#define BUS_SUBJECT_ALERT "postern.alert"

#endif
