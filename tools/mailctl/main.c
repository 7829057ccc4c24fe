/* mailctl: command line parsing and usage; the commands are lib/admin's. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin/admin.h"
#include "base/settings.h"

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
    for (const command_t *c = admin_commands; c->group; c++) {
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
            "  --service S       (harvest) one service: smtp, pop3, imap or web\n"
            "  --all             (queue retry) every queued message\n"
            "  --silent          (queue delete) delete without returning it to the sender\n"
            "  --unset           (relay tls-policy) remove a domain's policy\n"
            "\nHOST is a host name, an IPv4 address or an IPv6 address in brackets\n"
            "([2001:db8::25]:25). TLS policies: may (STARTTLS when offered), encrypt\n"
            "(STARTTLS required, certificate not checked), verify (STARTTLS required and a\n"
            "certificate valid for the host).\n"
            "\nsettings for config set (hamr.* are also set per domain and user with\n"
            "hamr set; harvest.enabled, .max_failures, .interval and .block also per service\n"
            "as harvest.<smtp|pop3|imap|web>.<field>, with harvest set --service):\n");
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

/* The first command of group with the second word verb, or NULL. */
static const command_t *verb_find(const char *group, const char *verb)
{
    for (const command_t *c = admin_commands; c->group; c++)
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
    for (const command_t *c = admin_commands; c->group; c++)
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
    if (rc == CTL_OK) {
        rc = admin_command_run(ctl, cmd, args, nargs);
        if (rc == CTL_USAGE && ctl->usage)
            command_usage(cmd->group, NULL, cmd);
    }
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
        const command_t *cmd = admin_command_find(words, nwords, &used, &group_known);
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
    const command_t *cmd = admin_command_find(pos, npos > 3 ? 3 : npos, &used, &group_known);
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
        ctl_error("--password-stdin only goes with user add, user passwd, admin add and admin passwd");
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
