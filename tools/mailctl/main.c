/* mailctl: command line parsing and the command table. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mailctl.h"
#include "base/settings.h"

/* Flags: which options a command accepts, and whether it needs the database. */
enum {
    CMD_PASSWORD = 1 << 0, /* --password-stdin */
    CMD_DOMAIN = 1 << 1,   /* --domain D */
    CMD_NO_DB = 1 << 3,    /* asks NATS only: runs while PostgreSQL is down */
    CMD_OPTIONS = 1 << 2,  /* parses its own options (opts.c): gets every word after the
                              command words except --json */
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

static const command_t commands[] = {
    { "migrate", NULL, NULL, 0, 0, 0, cmd_migrate, "", "apply the database schema migrations" },
    { "domain", "add", NULL, 1, 1, 0, cmd_domain_add, "NAME", "host mail for a domain" },
    { "domain", "del", NULL, 1, 1, 0, cmd_domain_del, "NAME",
      "stop hosting a domain (deletes its users and mail)" },
    { "domain", "list", NULL, 0, 0, 0, cmd_domain_list, "", "list the hosted domains" },
    { "user", "add", NULL, 1, 1, CMD_PASSWORD, cmd_user_add, "ADDRESS [--password-stdin]",
      "add a user to a hosted domain" },
    { "user", "passwd", NULL, 1, 1, CMD_PASSWORD, cmd_user_passwd, "ADDRESS [--password-stdin]",
      "set a user's password" },
    { "user", "del", NULL, 1, 1, 0, cmd_user_del, "ADDRESS", "delete a user and its mail" },
    { "user", "list", NULL, 0, 0, CMD_DOMAIN, cmd_user_list, "[--domain NAME]",
      "list users, all or one domain's" },
    { "relay", "mode", NULL, 1, 1, 0, cmd_relay_mode, "none|select|anyone",
      "who may relay besides authenticated clients" },
    { "relay", "allow", NULL, 1, 1, 0, cmd_relay_allow, "ADDRESS[/PREFIX]",
      "add an IPv4/IPv6 address or network to the relay list" },
    { "relay", "deny", NULL, 1, 1, 0, cmd_relay_deny, "ADDRESS[/PREFIX]",
      "remove an address or network from the relay list" },
    { "relay", "list", NULL, 0, 0, 0, cmd_relay_list, "",
      "show the relay mode and the relay list" },
    { "relay", "tls-policy", NULL, 0, 0, CMD_OPTIONS, cmd_relay_tls_policy,
      "[DOMAIN|'*' (may|encrypt|verify|--unset)]",
      "STARTTLS when relaying to a domain (default may); alone: list the policies" },
    { "queue", "list", NULL, 0, 0, 0, cmd_queue_list, "",
      "the messages waiting in the outbound queue" },
    { "queue", "show", NULL, 1, 1, 0, cmd_queue_show, "ID",
      "one queued message: recipients' states, replies, header section" },
    { "queue", "retry", NULL, 0, 0, CMD_OPTIONS, cmd_queue_retry, "ID | --all",
      "try a queued message (or all) now, unless being delivered" },
    { "queue", "delete", NULL, 0, 0, CMD_OPTIONS, cmd_queue_delete, "ID [--silent]",
      "cancel: relayd returns it to its sender; --silent: no notice" },
    { "transport", "set", NULL, 2, 2, 0, cmd_transport_set, "DOMAIN|'*' HOST:PORT",
      "relay a domain's mail ('*': any other) to HOST:PORT, not its MX" },
    { "transport", "del", NULL, 1, 1, 0, cmd_transport_del, "DOMAIN|'*'",
      "remove a transport: the domain's MX hosts are used again" },
    { "transport", "list", NULL, 0, 0, 0, cmd_transport_list, "", "list the transports" },
    { "config", "set", NULL, 2, 2, 0, cmd_config_set, "KEY VALUE", "set a system setting" },
    { "config", "unset", NULL, 1, 1, 0, cmd_config_unset, "KEY",
      "remove a system setting (its default applies)" },
    { "config", "show", NULL, 0, 0, 0, cmd_config_show, "", "show every system setting" },
    { "hamr", "set", NULL, 0, 0, CMD_OPTIONS, cmd_hamr_set,
      "(--system | --domain D | --user U) [--enabled on|off] [--max N] [--interval SECONDS]"
      " [--action throttle|disable] [--alert on|off] [--max-recipients N]"
      " [--alert-owner on|off]",
      "set HAMR limits at one level (user over domain over system, field by field)" },
    { "hamr", "unset", NULL, 0, 0, CMD_OPTIONS, cmd_hamr_unset,
      "(--system | --domain D | --user U) (--all | [--enabled] [--max] [--interval]"
      " [--action] [--alert] [--max-recipients] [--alert-owner])",
      "remove HAMR fields at one level, so they are inherited again" },
    { "hamr", "show", NULL, 0, 0, CMD_OPTIONS, cmd_hamr_show,
      "--system | --domain D | --user U",
      "the effective HAMR settings and the level each comes from" },
    { "hamr", "reset", NULL, 0, 0, CMD_OPTIONS, cmd_hamr_reset, "--system | --domain D | --user U",
      "delete the user-level HAMR settings of every user, of a domain's users, or of one" },
    { "hamr", "status", NULL, 0, 0, 0, cmd_hamr_status, "",
      "users throttled now, accounts whose sending is disabled, recent HAMR alerts" },
    { "limiter", "status", NULL, 0, 0, CMD_NO_DB, cmd_limiter_status, "",
      "which limiter replica answers, since when, the last takeover; the stream and bucket "
      "holding its counters and lease" },
    { "hamr", "enable", NULL, 0, 0, CMD_OPTIONS, cmd_hamr_enable, "--user U",
      "let an account disabled by HAMR send again" },
    { "harvest", "set", NULL, 0, 0, CMD_OPTIONS, cmd_harvest_set,
      "[--service smtp|pop3|imap] [--enabled on|off] [--max-failures N] [--interval SECONDS]"
      " [--block SECONDS] [--soft-limit N] [--hard-limit N]",
      "set harvesting limits for every service, or for one" },
    { "harvest", "unset", NULL, 0, 0, CMD_OPTIONS, cmd_harvest_unset,
      "[--service smtp|pop3|imap] (--all | [--enabled] [--max-failures] [--interval]"
      " [--block] [--soft-limit] [--hard-limit])",
      "remove harvesting settings (a service's inherit the system's again)" },
    { "harvest", "show", NULL, 0, 0, 0, cmd_harvest_show, "",
      "the effective harvesting settings per service and where they come from" },
    { "harvest", "blocks", NULL, 0, 0, 0, cmd_harvest_blocks, "",
      "the client networks blocked now" },
    { "harvest", "unblock", NULL, 1, 1, 0, cmd_harvest_unblock, "ADDRESS[/PREFIX]",
      "lift the blocks covering an address (IPv6: its /64) or inside a network" },
    { "harvest", "exempt", "add", 1, 1, 0, cmd_harvest_exempt_add, "ADDRESS[/PREFIX]",
      "never block this address or network (an exemption beats a block)" },
    { "harvest", "exempt", "del", 1, 1, 0, cmd_harvest_exempt_del, "ADDRESS[/PREFIX]",
      "remove an exempt network" },
    { "harvest", "exempt", "list", 0, 0, 0, cmd_harvest_exempt_list, "",
      "list the exempt networks" },
    { "alert-address", "add", NULL, 1, 1, 0, cmd_alert_address_add, "ADDRESS",
      "send HAMR and harvesting alerts to this address" },
    { "alert-address", "del", NULL, 1, 1, 0, cmd_alert_address_del, "ADDRESS",
      "stop sending alerts to this address" },
    { "alert-address", "list", NULL, 0, 0, 0, cmd_alert_address_list, "",
      "list the alert addresses and how mail reaches each" },
    { NULL, NULL, NULL, 0, 0, 0, NULL, NULL, NULL },
};

/* "group verb sub ARGS" of a command. */
static void command_words(const command_t *c, char *out, size_t out_len)
{
    snprintf(out, out_len, "%s%s%s%s%s%s%s", c->group, c->verb ? " " : "", c->verb ? c->verb : "",
             c->sub ? " " : "", c->sub ? c->sub : "", *c->args_usage ? " " : "", c->args_usage);
}

#define USAGE_COLUMN 38
#define USAGE_WIDTH 88

/* A command too long for one line: its words wrapped under its arguments, then its help
 * in the help column. */
static void usage_wrapped(FILE *f, const command_t *c, const char *line)
{
    size_t indent = 10 + strlen(line) - strlen(c->args_usage);
    size_t col = fprintf(f, "  mailctl %.*s", (int)(strlen(line) - strlen(c->args_usage)), line);
    const char *p = c->args_usage;
    bool first = true;
    while (*p) {
        while (*p == ' ')
            p++;
        size_t n = strcspn(p, " ");
        if (n == 0)
            break;
        if (!first && col + 1 + n > USAGE_WIDTH)
            col = (size_t)fprintf(f, "\n%*s", (int)indent, "") - 1;
        else if (!first)
            col += (size_t)fprintf(f, " ");
        col += (size_t)fprintf(f, "%.*s", (int)n, p);
        p += n;
        first = false;
    }
    fprintf(f, "\n  %-*s          %s\n", USAGE_COLUMN, "", c->help);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: mailctl [--json] COMMAND [ARGS]\n\ncommands:\n");
    const char *group = NULL;
    for (const command_t *c = commands; c->group; c++) {
        char line[512];
        command_words(c, line, sizeof line);
        if (group && strcmp(group, c->group) != 0)
            fputc('\n', f);
        group = c->group;
        if (strlen(line) <= USAGE_COLUMN)
            fprintf(f, "  mailctl %-*s  %s\n", USAGE_COLUMN, line, c->help);
        else
            usage_wrapped(f, c, line);
    }
    fprintf(f, "\n  mailctl %-*s  %s\n", USAGE_COLUMN, "help", "this text");
    fprintf(f,
            "\noptions:\n"
            "  --json            print the result as JSON on stdout\n"
            "  --password-stdin  read the password as one line from standard input\n"
            "  --domain NAME     (user list) only this domain's users\n"
            "  --system, --domain D, --user U\n"
            "                    (hamr) the level: system-wide, a hosted domain, one user\n"
            "  --service S       (harvest) one service: smtp, pop3 or imap\n"
            "  --all             (queue retry) every queued message\n"
            "  --silent          (queue delete) delete without returning it to the sender\n"
            "  --unset           (relay tls-policy) remove a domain's policy\n"
            "\nHOST is a host name, an IPv4 address or an IPv6 address in brackets\n"
            "([2001:db8::25]:25). TLS policies: may (STARTTLS when offered), encrypt\n"
            "(STARTTLS required, certificate not checked), verify (STARTTLS required and a\n"
            "certificate valid for the host).\n"
            "\nsettings for config set (hamr.* are also set per domain and user with\n"
            "hamr set; harvest.enabled, .max_failures, .interval and .block also per service\n"
            "as harvest.<smtp|pop3|imap>.<field>, with harvest set --service):\n");
    char expected[64];
    int wk = 25;
    for (const setting_def_t *d = settings_table; d->key; d++)
        if ((int)strlen(d->key) > wk)
            wk = (int)strlen(d->key);
    for (const setting_def_t *d = settings_table; d->key; d++)
        fprintf(f, "  %-*s %-34s default %s\n", wk, d->key,
                settings_expected(d, expected, sizeof expected),
                *d->default_value ? d->default_value : "(empty)");
    fprintf(f,
            "\nThe database is DATABASE_URL, or the one named in var/postern.env in the\n"
            "current directory (written by `make run`). Changes are announced on NATS_URL\n"
            "(default nats://127.0.0.1:4222).\n"
            "Exit status: 0 done, 1 bad input or refused, 2 database unavailable.\n");
}

/* The command named by words[0..nwords-1] (a group, a verb, a third word); *used_r says
 * how many of the words name it, *group_known_r whether words[0] is a group. */
static const command_t *command_find(char **words, int nwords, int *used_r,
                                     bool *group_known_r)
{
    *group_known_r = false;
    *used_r = 0;
    for (const command_t *c = commands; c->group; c++) {
        if (strcmp(c->group, words[0]) != 0)
            continue;
        *group_known_r = true;
        if (!c->verb) {
            *used_r = 1;
            return c;
        }
        if (nwords < 2 || strcmp(c->verb, words[1]) != 0)
            continue;
        if (!c->sub) {
            *used_r = 2;
            return c;
        }
        if (nwords >= 3 && strcmp(c->sub, words[2]) == 0) {
            *used_r = 3;
            return c;
        }
    }
    return NULL;
}

/* The first command of group with the second word verb, or NULL. */
static const command_t *verb_find(const char *group, const char *verb)
{
    for (const command_t *c = commands; c->group; c++)
        if (strcmp(c->group, group) == 0 && c->verb && strcmp(c->verb, verb) == 0)
            return c;
    return NULL;
}

static void command_line(const command_t *c)
{
    char line[512];
    command_words(c, line, sizeof line);
    fprintf(stderr, "  mailctl %s\n", line);
}

/* The usage of one command, or of every command of a group (or of a group's verb) when
 * cmd is NULL. */
static void command_usage(const char *group, const char *verb, const command_t *cmd)
{
    fprintf(stderr, "usage:\n");
    if (cmd) {
        command_line(cmd);
        return;
    }
    bool verb_known = verb && verb_find(group, verb);
    for (const command_t *c = commands; c->group; c++)
        if (strcmp(c->group, group) == 0 &&
            (!verb_known || (c->verb && strcmp(c->verb, verb) == 0)))
            command_line(c);
}

/* Says what is wrong with a command line that names no command. */
static void command_unknown(char **words, int nwords, bool group_known)
{
    if (!group_known) {
        ctl_error("unknown command: %s (see mailctl --help)", words[0]);
        return;
    }
    const command_t *verb = nwords > 1 ? verb_find(words[0], words[1]) : NULL;
    if (nwords < 2)
        ctl_error("%s needs a subcommand", words[0]);
    else if (!verb)
        ctl_error("unknown command: %s %s", words[0], words[1]);
    else if (verb->sub && nwords < 3)
        ctl_error("%s %s needs a subcommand", words[0], words[1]);
    else
        ctl_error("unknown command: %s %s %s", words[0], words[1], words[2]);
    command_usage(words[0], nwords > 1 ? words[1] : NULL, NULL);
}

static bool help_flag(const char *a)
{
    return strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0;
}

/* True for the options main() handles for every command. */
static bool global_flag(const char *a)
{
    return strcmp(a, "--json") == 0 || help_flag(a);
}

/* Connects, runs cmd with args and disconnects; a command line that cmd found wrong gets
 * its usage. */
static int command_run(ctl_t *ctl, const command_t *cmd, char **args, int nargs)
{
    int rc = ctl_config_load(ctl);
    if (rc == CTL_OK && !(cmd->flags & CMD_NO_DB))
        rc = ctl_connect(ctl);
    if (rc == CTL_OK) {
        rc = cmd->run(ctl, args, nargs);
        if (rc == CTL_USAGE && ctl->usage)
            command_usage(cmd->group, NULL, cmd);
    }
    if (ctl->in_tx)
        ctl_rollback(ctl);
    ctl_disconnect(ctl);
    return rc;
}

/* Runs a command that parses its own options: every word after the command words goes to
 * it, except --json (and --help, which shows its usage). */
static int run_with_options(ctl_t *ctl, const command_t *cmd, char **rest, int nrest)
{
    char **args = calloc((size_t)nrest + 1, sizeof *args);
    if (!args)
        return CTL_DB;
    int nargs = 0;
    for (int i = 0; i < nrest; i++) {
        if (strcmp(rest[i], "--json") == 0) {
            ctl->json = true;
        } else if (help_flag(rest[i])) {
            command_usage(cmd->group, NULL, cmd);
            free(args);
            return CTL_OK;
        } else {
            args[nargs++] = rest[i];
        }
    }
    int rc = command_run(ctl, cmd, args, nargs);
    free(args);
    return rc;
}

int main(int argc, char **argv)
{
    ctl_t ctl = { 0 };
    char **pos = calloc((size_t)argc + 1, sizeof *pos);
    if (!pos)
        return CTL_DB;
    int npos = 0;
    bool help = false, only_pos = false;
    int rc = CTL_USAGE;

    /* The command words come first (global flags may sit between them); a command that
     * parses its own options gets everything after them. */
    char *words[3];
    int nwords = 0, after = 1;
    for (; after < argc && nwords < 3; after++) {
        if (global_flag(argv[after])) {
            if (strcmp(argv[after], "--json") == 0)
                ctl.json = true;
            else
                help = true;
            continue;
        }
        if (argv[after][0] == '-')
            break;
        words[nwords++] = argv[after];
    }
    if (!help && nwords > 0 && strcmp(words[0], "help") != 0) {
        int used;
        bool group_known;
        const command_t *cmd = command_find(words, nwords, &used, &group_known);
        if (cmd && (cmd->flags & CMD_OPTIONS)) {
            int first = after - (nwords - used); /* words past the command are its own */
            rc = run_with_options(&ctl, cmd, argv + first, argc - first);
            goto out;
        }
    }
    ctl.json = false;
    help = false;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (only_pos || a[0] != '-' || a[1] == '\0') {
            pos[npos++] = argv[i];
        } else if (strcmp(a, "--") == 0) {
            only_pos = true;
        } else if (strcmp(a, "--json") == 0) {
            ctl.json = true;
        } else if (help_flag(a)) {
            help = true;
        } else if (strcmp(a, "--password-stdin") == 0) {
            ctl.password_stdin = true;
        } else if (strcmp(a, "--domain") == 0) {
            if (i + 1 >= argc) {
                ctl_error("--domain needs a domain name");
                goto out;
            }
            ctl.domain = argv[++i];
        } else if (strncmp(a, "--domain=", 9) == 0) {
            ctl.domain = a + 9;
        } else {
            ctl_error("unknown option %s (see mailctl --help)", a);
            goto out;
        }
    }

    if (help || (npos > 0 && strcmp(pos[0], "help") == 0)) {
        usage(stdout);
        rc = CTL_OK;
        goto out;
    }
    if (npos == 0) {
        usage(stderr);
        goto out;
    }
    int used;
    bool group_known;
    const command_t *cmd = command_find(pos, npos > 3 ? 3 : npos, &used, &group_known);
    if (!cmd) {
        command_unknown(pos, npos > 3 ? 3 : npos, group_known);
        goto out;
    }
    if (cmd->flags & CMD_OPTIONS) {
        /* Options before the command words, or a "--" among them. */
        ctl_error("put the options of %s %s after its name", cmd->group, cmd->verb);
        command_usage(cmd->group, NULL, cmd);
        goto out;
    }
    int nargs = npos - used;
    if (nargs < cmd->min_args || nargs > cmd->max_args) {
        ctl_error("%s", nargs < cmd->min_args ? "missing argument" : "too many arguments");
        command_usage(cmd->group, NULL, cmd);
        goto out;
    }
    if (ctl.password_stdin && !(cmd->flags & CMD_PASSWORD)) {
        ctl_error("--password-stdin only goes with user add and user passwd");
        goto out;
    }
    if (ctl.domain && !(cmd->flags & CMD_DOMAIN)) {
        ctl_error("--domain only goes with user list");
        goto out;
    }

    rc = command_run(&ctl, cmd, pos + used, nargs);
out:
    ctl_config_free(&ctl);
    free(pos);
    return rc;
}
