/* The administrator's operations, shared by mailctl (the command line) and webd (the JSON
 * API). One operation is one command of the table (admin_commands): connect to PostgreSQL
 * (blocking libpq: a CLI, or one of webd's worker threads, never a loop thread), make the
 * change in one transaction together with its audit_log row (who, from where), announce it
 * on NATS, print the outcome for people or as JSON on the thread's output stream.
 *
 * Status: 0 done, 1 bad input or refused, 2 the database could not be used. */
#ifndef POSTERN_ADMIN_H
#define POSTERN_ADMIN_H

#include <libpq-fe.h>
#include <nats/nats.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

enum { CTL_OK = 0, CTL_USAGE = 1, CTL_DB = 2 };

/* A timestamptz column as ISO 8601 UTC text, for lists. */
#define SQL_UTC(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"

typedef struct ctl {
    bool json;           /* --json: JSON on stdout */
    bool password_stdin; /* --password-stdin */
    const char *domain;  /* --domain D */
    char *database_url;  /* from DATABASE_URL or var/postern.env */
    char *nats_url;      /* from NATS_URL or var/postern.env, or the default */
    char *nats_user;     /* NATS_USER, NATS_PASSWORD (or NATS_PASSWORD_FILE), NATS_TLS_CA: */
    char *nats_password; /* from the environment when it sets NATS_USER, else from */
    char *nats_tls_ca;   /* var/postern.env; NULL when unset */
    char actor[160];     /* who runs the command, for audit_log: a login name, or for webd
                            "web:NAME from ADDRESS" */
    const char *password;  /* the new password, given by the caller (webd) instead of
                              being read from a terminal or stdin; NULL for mailctl */
    /* Publishes an announcement on the caller's bus connection (webd), returning 0 or -1;
     * NULL: a connection is made for each announcement (mailctl). */
    int (*publish)(void *arg, const char *subject, const void *data, size_t len);
    void *publish_arg;
    bool pg_borrowed;      /* pg is the caller's: ctl_disconnect leaves it open */
    PGconn *pg;
    bool in_tx;
    bool usage;          /* set with CTL_USAGE when the command line was wrong: main()
                            prints the command's usage */
} ctl_t;

/* ---- out.c: messages and output ---------------------------------------------------- */
/* Where this thread's command prints: its outcome (stdout unless set) and its messages
 * (stderr unless set). webd sets memory streams around each command it runs. */
FILE *ctl_out(void);
FILE *ctl_err(void);
void ctl_set_streams(FILE *out, FILE *err);
/* "mailctl: ..." on stderr. ctl_error returns CTL_USAGE so handlers can return it. */
int ctl_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void ctl_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* s as a JSON string, quotes included; NULL as null. */
void json_str(FILE *f, const char *s);
/* Width of the widest value of column col (at least min), for aligned tables. */
int out_width(const PGresult *res, int col, int min);
/* The start of a change's JSON outcome, {"ok":true,"action":ACTION,"KEY":VALUE, on stdout;
 * the caller adds its own members and the closing "}\n". */
void out_json_ok(const char *action, const char *key, const char *value);

/* A member of the objects out_json_rows() prints: the value of column col as a JSON
 * string, as it is (a number), or as true/false (a boolean column's t/f). */
typedef enum out_kind { OUT_STR, OUT_NUM, OUT_BOOL } out_kind_t;
typedef struct out_col {
    const char *name;
    int col;
    out_kind_t kind;
} out_col_t;
/* The rows of res on stdout as a JSON array of objects, members cols[0..ncols-1]. */
void out_json_rows(const PGresult *res, const out_col_t *cols, size_t ncols);

/* ---- pg.c: the database ------------------------------------------------------------ */
/* Finds DATABASE_URL and NATS_URL (environment first, then var/postern.env) and the
 * actor. Returns CTL_OK, or CTL_DB after printing why. */
int ctl_config_load(ctl_t *ctl);
void ctl_config_free(ctl_t *ctl);
/* Connects to the database. Returns CTL_OK, or CTL_DB after printing why. */
int ctl_connect(ctl_t *ctl);
void ctl_disconnect(ctl_t *ctl);
/* Runs sql with text parameters. Returns the result when the statement succeeded;
 * otherwise prints why, rolls back an open transaction and returns NULL (exit CTL_DB). */
PGresult *ctl_query(ctl_t *ctl, const char *sql, int nparams, const char *const *params);
/* Same, but hands back any result (NULL only when out of memory): for statements whose
 * errors the caller turns into its own messages. */
PGresult *ctl_query_raw(ctl_t *ctl, const char *sql, int nparams, const char *const *params);
/* Prints why the statement of the failed result res failed, clears res, rolls back an
 * open transaction; returns CTL_DB. */
int ctl_report(ctl_t *ctl, PGresult *res);
/* The SQLSTATE of a failed result ("" if none). */
const char *ctl_sqlstate(const PGresult *res);
/* Statements whose result is one number or value, or only its row count, like ctl_query():
 * each returns CTL_OK or CTL_DB (reported).
 * ctl_exec: the number of rows returned in *rows_r (unless rows_r is NULL).
 * ctl_query_value: the first column of the one row returned (malloc'd) in *value_r, or
 * NULL when no row came back.
 * ctl_count: the first column of the first row (a count) in *count_r. */
int ctl_exec(ctl_t *ctl, const char *sql, int nparams, const char *const *params, int *rows_r);
int ctl_query_value(ctl_t *ctl, const char *sql, int nparams, const char *const *params,
                    char **value_r);
int ctl_count(ctl_t *ctl, const char *sql, int nparams, const char *const *params, long *count_r);
/* Transactions. Each returns CTL_OK or CTL_DB (reported). */
int ctl_begin(ctl_t *ctl);
int ctl_commit(ctl_t *ctl);
void ctl_rollback(ctl_t *ctl);
/* Adds the audit_log row of this change (inside the transaction). */
int ctl_audit(ctl_t *ctl, const char *action, const char *detail);
/* ctl_audit(), then ctl_commit(): the end of a change. */
int ctl_audit_commit(ctl_t *ctl, const char *action, const char *detail);

/* ---- announce.c: NATS -------------------------------------------------------------- */
/* Connects to NATS as mailctl (the URLs, user, password and CA of ctl), without
 * reconnecting, waiting at most timeout_ms. Returns NATS_OK with *nc_r to destroy with
 * natsConnection_Destroy(), or the error (its text in err). */
natsStatus ctl_nats_connect(ctl_t *ctl, int timeout_ms, natsConnection **nc_r, char *err,
                            size_t err_len);
/* Publishes ConfigChanged{what} on postern.config.changed; warns (only) when it cannot. */
void ctl_announce(ctl_t *ctl, const char *what);

/* ---- password.c -------------------------------------------------------------------- */
/* A new password: one line from stdin with --password-stdin, otherwise asked twice on
 * the terminal without echo. Returns CTL_OK with *pw_r (free with password_free), or
 * CTL_USAGE after printing why. */
int password_read_new(ctl_t *ctl, char **pw_r, size_t *len_r);
void password_free(char *pw, size_t len);
/* A new password (password_read_new) turned into the RFC 5803 SCRAM secret text that is
 * stored, in secret (SCRAM_SECRET_TEXT_MAX bytes, auth/scram.h). CTL_OK or CTL_USAGE. */
int password_secret_new(ctl_t *ctl, char *secret);

/* ---- names.c: what domain names and addresses may look like ------------------------ */
/* Lowercases name in place and checks it: LDH labels of 1..63, dots between them, no
 * trailing dot, at most 253 characters, not all-numeric at the end. On failure writes
 * why and returns false. */
bool name_domain_check(char *name, char *why, size_t why_len);
/* Lowercases address in place and checks it: a dot-atom local part (RFC 5321) of at most
 * 64 characters, '@', a domain as above. *domain_r points into address. */
bool name_address_check(char *address, const char **domain_r, char *why, size_t why_len);
/* Copies an argument into a buffer of NAME_BUF bytes for checking; false (reported) when
 * it does not fit. */
#define NAME_BUF 512
bool name_copy(char *dst, const char *src, const char *what);
/* A domain name (name_domain_arg) or an address (name_address_arg; *domain_r points into
 * address) from the command line, copied into a buffer of NAME_BUF bytes and checked.
 * Returns CTL_OK, or CTL_USAGE after saying what is wrong. */
int name_domain_arg(const char *arg, char *name);
int name_address_arg(const char *arg, char *address, const char **domain_r);
/* Checks the shape of an IPv4/IPv6 address or network before PostgreSQL parses it. */
bool name_cidr_chars(const char *text);

/* ---- netlist.c: addresses and networks, and the lists of networks ------------------- */
/* Checks text as an IPv4/IPv6 address or network and runs sql, a query of one row with
 * text as $1, in *res_r (the caller clears it). Text that is no address or network (also
 * by PostgreSQL's word, a data exception) is reported with the examples; returns CTL_OK,
 * CTL_USAGE or CTL_DB (reported). */
int network_query(ctl_t *ctl, const char *text, const char *sql, const char *examples,
                  PGresult **res_r);
/* Checks text as an IPv4/IPv6 address or network and puts its canonical cidr form in net
 * (e.g. "10.0.0.0/8", "192.0.2.1/32", "2001:db8::/32"); host bits to the right of the
 * prefix are refused. Returns CTL_OK, CTL_USAGE (reported) or CTL_DB. */
int network_arg(ctl_t *ctl, const char *text, char *net, size_t net_len);

/* A table of cidr values (network PRIMARY KEY, created_at) that commands add to, remove
 * from and list: relay_networks, harvest_exempt. */
typedef struct netlist {
    const char *table;      /* "relay_networks" */
    const char *name;       /* "the relay list", for messages */
    const char *add_action; /* "relay allow": audit_log action and JSON "action" */
    const char *del_action; /* "relay deny"; "mailctl relay deny" removes a network */
    const char *added;      /* "added to the relay list:", before the network */
    const char *present;    /* "already in the relay list (nothing changed):" */
    const char *removed;    /* "removed from the relay list:" */
} netlist_t;
#define NETLIST_NET_MAX 128

/* Called inside netlist_add()'s transaction once net is added, for the caller's own
 * reads; returns CTL_OK or CTL_DB (reported). */
typedef int (*netlist_added_fn)(ctl_t *ctl, const char *net, void *arg);
/* Adds the network text to list in one transaction with its audit_log row, calling added
 * (unless NULL) in it, and prints the outcome. *added_r is false when the network was
 * listed already: nothing changed. The caller announces the change. */
int netlist_add(ctl_t *ctl, const netlist_t *list, const char *text, netlist_added_fn added,
                void *arg, bool *added_r);
/* Removes the network text from list in one transaction with its audit_log row and prints
 * the outcome; a network not listed is refused, naming a listed one that covers it. The
 * caller announces the change. */
int netlist_del(ctl_t *ctl, const netlist_t *list, const char *text);
/* The networks of list and when each was added, in order; NULL on error (reported). */
PGresult *netlist_query(ctl_t *ctl, const netlist_t *list);
/* The rows of netlist_query() on stdout: as a JSON array; as a table NETWORK ADDED, each
 * line after indent. */
void netlist_print_json(const PGresult *res);
void netlist_print_table(const PGresult *res, const char *indent);

/* ---- opts.c: options of the commands that take their own ----------------------------- */
typedef struct opt_spec {
    const char *name; /* "--max" */
    bool value;       /* takes a value: "--max 10" or "--max=10" */
} opt_spec_t;

/* Parses args against specs (nspecs entries). values[i] gets the value of specs[i], ""
 * for a flag given, NULL when absent; arguments that are not options go to pos (room for
 * nargs) and their count to *npos_r. Unknown options, a missing value and an option given
 * twice are reported: returns CTL_USAGE with ctl->usage set, else CTL_OK. */
int opt_parse(ctl_t *ctl, const opt_spec_t *specs, size_t nspecs, char **args, int nargs,
              const char **values, char **pos, int *npos_r);

/* ---- tier.c: settings at the system, domain and user levels ----------------------- */
typedef struct tier_scope {
    const char *scope;      /* "system", "domain", "user" */
    char id[32];            /* scope_id as text: "0", domains.id, users.id */
    char name[NAME_BUF];    /* "", the domain name, the user's address */
    char domain_id[32];     /* user scope: the user's domain's id */
    char domain[NAME_BUF];  /* user scope: the user's domain name */
} tier_scope_t;

/* The level chosen by exactly one of --system, --domain D, --user U (any NULL when not
 * given), looked up in the database. Returns CTL_OK, CTL_USAGE (reported) or CTL_DB. */
int tier_scope_resolve(ctl_t *ctl, bool system, const char *domain, const char *user,
                       tier_scope_t *scope);
/* "system", "domain example.org", "user alice@example.org", for messages. */
const char *tier_scope_label(const tier_scope_t *scope, char *buf, size_t buf_len);
/* Inside the caller's transaction: stores key=value at scope; *old_r gets the value stored
 * before (malloc'd) or NULL. */
int tier_put(ctl_t *ctl, const tier_scope_t *scope, const char *key, const char *value,
             char **old_r);
/* Inside the caller's transaction: deletes key at scope; *old_r as above (NULL: it was not
 * set). */
int tier_del(ctl_t *ctl, const tier_scope_t *scope, const char *key, char **old_r);
/* Lowercases a value (not integers) into buf and checks it against key's definition;
 * reports "invalid value for OPTION: expected ..." and returns false when it is wrong. */
bool tier_value_check(const char *option, const char *key, const char *text, char *buf,
                      size_t buf_len);

/* One change of tier_apply(): value NULL removes key at the level. */
typedef struct tier_change {
    const char *key;
    const char *value;
    char *old;    /* filled by tier_apply: the value stored before, or NULL */
    bool changed; /* filled by tier_apply */
} tier_change_t;
/* Makes the changes at scope in one transaction with an audit_log row (action, detail
 * "<level>: key=value (was ...)") per change that changes something, prints them, and
 * announces ConfigChanged{what} when anything changed. */
int tier_apply(ctl_t *ctl, const tier_scope_t *scope, const char *action,
               tier_change_t *changes, size_t n, const char *what);

/* The effective value of a setting from the values stored at each level (stored[i], NULL
 * when not set; the first level wins) or its default. Invalid stored values are skipped. */
typedef struct tier_value {
    const char *value;
    const char *source;  /* levels[i], or "default" */
    const char *invalid; /* the first level whose stored value is invalid, or NULL */
} tier_value_t;
struct setting_def;
void tier_resolve(const struct setting_def *def, const char *const *stored,
                  const char *const *levels, size_t nlevels, tier_value_t *out);

/* ---- commands.c: the command table ------------------------------------------------- */
/* Flags: which options a command accepts, and whether it needs the database. */
enum {
    CMD_PASSWORD = 1 << 0, /* --password-stdin (webd: ctl->password) */
    CMD_DOMAIN = 1 << 1,   /* --domain D */
    CMD_OPTIONS = 1 << 2,  /* parses its own options (opts.c): gets every word after the
                              command words except --json */
    CMD_NO_DB = 1 << 3,    /* asks NATS only: runs while PostgreSQL is down */
};

typedef struct command {
    const char *group; /* first word */
    const char *verb;  /* second word, NULL for one-word commands */
    const char *sub;   /* third word, NULL for one- and two-word commands */
    int min_args, max_args;
    unsigned flags;
    int (*run)(ctl_t *ctl, char **args, int nargs);
    const char *args_usage;
    const char *help;
} command_t;

/* Every command, ended by an entry whose group is NULL. */
extern const command_t admin_commands[];
/* The command named by words[0..nwords-1] (a group, a verb, a third word); *used_r says
 * how many of the words name it, *group_known_r whether words[0] is a group. */
const command_t *admin_command_find(char **words, int nwords, int *used_r,
                                    bool *group_known_r);
/* Runs cmd with args on ctl (configuration loaded): connects unless the command needs no
 * database or ctl->pg is the caller's, runs, rolls back what is left open, disconnects. */
int admin_command_run(ctl_t *ctl, const command_t *cmd, char **args, int nargs);

/* ---- commands ---------------------------------------------------------------------- */
int cmd_migrate(ctl_t *ctl, char **args, int nargs);
int cmd_domain_add(ctl_t *ctl, char **args, int nargs);
int cmd_domain_del(ctl_t *ctl, char **args, int nargs);
int cmd_domain_list(ctl_t *ctl, char **args, int nargs);
int cmd_user_add(ctl_t *ctl, char **args, int nargs);
int cmd_user_passwd(ctl_t *ctl, char **args, int nargs);
int cmd_user_del(ctl_t *ctl, char **args, int nargs);
int cmd_user_list(ctl_t *ctl, char **args, int nargs);
/* ADDRESS [--limit N]: the login history (table logins), newest first. */
int cmd_user_logins(ctl_t *ctl, char **args, int nargs);
int cmd_relay_mode(ctl_t *ctl, char **args, int nargs);
int cmd_relay_allow(ctl_t *ctl, char **args, int nargs);
int cmd_relay_deny(ctl_t *ctl, char **args, int nargs);
int cmd_relay_list(ctl_t *ctl, char **args, int nargs);
int cmd_config_set(ctl_t *ctl, char **args, int nargs);
int cmd_config_unset(ctl_t *ctl, char **args, int nargs);
int cmd_config_show(ctl_t *ctl, char **args, int nargs);
int cmd_hamr_set(ctl_t *ctl, char **args, int nargs);
int cmd_hamr_unset(ctl_t *ctl, char **args, int nargs);
int cmd_hamr_show(ctl_t *ctl, char **args, int nargs);
int cmd_hamr_reset(ctl_t *ctl, char **args, int nargs);
int cmd_hamr_status(ctl_t *ctl, char **args, int nargs);
int cmd_hamr_enable(ctl_t *ctl, char **args, int nargs);
/* cmd_limiter.c */
int cmd_limiter_status(ctl_t *ctl, char **args, int nargs);
/* The limiter's replicas, stream and bucket: JSON members (no braces) or text. */
int limiter_status_print(ctl_t *ctl, bool json);
int cmd_harvest_set(ctl_t *ctl, char **args, int nargs);
int cmd_harvest_unset(ctl_t *ctl, char **args, int nargs);
int cmd_harvest_show(ctl_t *ctl, char **args, int nargs);
int cmd_harvest_blocks(ctl_t *ctl, char **args, int nargs);
int cmd_harvest_unblock(ctl_t *ctl, char **args, int nargs);
int cmd_harvest_exempt_add(ctl_t *ctl, char **args, int nargs);
int cmd_harvest_exempt_del(ctl_t *ctl, char **args, int nargs);
int cmd_harvest_exempt_list(ctl_t *ctl, char **args, int nargs);
int cmd_alert_address_add(ctl_t *ctl, char **args, int nargs);
int cmd_alert_address_del(ctl_t *ctl, char **args, int nargs);
int cmd_alert_address_list(ctl_t *ctl, char **args, int nargs);
int cmd_admin_add(ctl_t *ctl, char **args, int nargs);
int cmd_admin_passwd(ctl_t *ctl, char **args, int nargs);
int cmd_admin_del(ctl_t *ctl, char **args, int nargs);
int cmd_admin_list(ctl_t *ctl, char **args, int nargs);

int cmd_queue_list(ctl_t *ctl, char **args, int nargs);
int cmd_queue_show(ctl_t *ctl, char **args, int nargs);
int cmd_queue_retry(ctl_t *ctl, char **args, int nargs);
int cmd_queue_delete(ctl_t *ctl, char **args, int nargs);
int cmd_transport_set(ctl_t *ctl, char **args, int nargs);
int cmd_transport_del(ctl_t *ctl, char **args, int nargs);
int cmd_transport_list(ctl_t *ctl, char **args, int nargs);
int cmd_relay_tls_policy(ctl_t *ctl, char **args, int nargs);

/* cmd_transport.c, shared with cmd_relay.c: the destination domain of a transport or a
 * TLS policy, '*' or a domain name (lower-cased into name, NAME_BUF bytes); returns CTL_OK
 * or CTL_USAGE (reported). relay_domain_not_hosted() refuses a hosted domain, whose mail
 * never leaves, naming what would go unused ("a transport"); inside the caller's
 * transaction, which it rolls back when it refuses. Returns CTL_OK, CTL_USAGE or CTL_DB
 * (reported). */
int relay_domain_arg(const char *arg, char *name);
int relay_domain_not_hosted(ctl_t *ctl, const char *domain, const char *what);

/* cmd_config.c, shared with cmd_relay.c: a system setting's stored value (malloc'd, NULL
 * when unset) and writing one inside the caller's transaction. */
int setting_get(ctl_t *ctl, const char *key, char **value_r);
int setting_put(ctl_t *ctl, const char *key, const char *value);
/* The loud warning printed whenever relay.mode becomes anyone. */
void relay_open_warning(void);

#endif
