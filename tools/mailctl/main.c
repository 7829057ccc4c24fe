/* mailctl: command line parsing and the command table. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mailctl.h"
#include "settings.h"

/* Flags: which options a command accepts, and whether it needs the database. */
enum {
    CMD_PASSWORD = 1 << 0, /* --password-stdin */
    CMD_DOMAIN = 1 << 1,   /* --domain D */
};

typedef struct command {
    const char *group; /* first word */
    const char *verb;  /* second word, NULL for one-word commands */
    int min_args, max_args;
    unsigned flags;
    int (*run)(ctl_t *ctl, char **args, int nargs);
    const char *args_usage;
    const char *help;
} command_t;

static const command_t commands[] = {
    { "migrate", NULL, 0, 0, 0, cmd_migrate, "", "apply the database schema migrations" },
    { "domain", "add", 1, 1, 0, cmd_domain_add, "NAME", "host mail for a domain" },
    { "domain", "del", 1, 1, 0, cmd_domain_del, "NAME",
      "stop hosting a domain (deletes its users and mail)" },
    { "domain", "list", 0, 0, 0, cmd_domain_list, "", "list the hosted domains" },
    { "user", "add", 1, 1, CMD_PASSWORD, cmd_user_add, "ADDRESS [--password-stdin]",
      "add a user to a hosted domain" },
    { "user", "passwd", 1, 1, CMD_PASSWORD, cmd_user_passwd, "ADDRESS [--password-stdin]",
      "set a user's password" },
    { "user", "del", 1, 1, 0, cmd_user_del, "ADDRESS", "delete a user and its mail" },
    { "user", "list", 0, 0, CMD_DOMAIN, cmd_user_list, "[--domain NAME]",
      "list users, all or one domain's" },
    { "relay", "mode", 1, 1, 0, cmd_relay_mode, "none|select|anyone",
      "who may relay besides authenticated clients" },
    { "relay", "allow", 1, 1, 0, cmd_relay_allow, "ADDRESS[/PREFIX]",
      "add an IPv4/IPv6 address or network to the relay list" },
    { "relay", "deny", 1, 1, 0, cmd_relay_deny, "ADDRESS[/PREFIX]",
      "remove an address or network from the relay list" },
    { "relay", "list", 0, 0, 0, cmd_relay_list, "", "show the relay mode and the relay list" },
    { "config", "set", 2, 2, 0, cmd_config_set, "KEY VALUE", "set a system setting" },
    { "config", "unset", 1, 1, 0, cmd_config_unset, "KEY",
      "remove a system setting (its default applies)" },
    { "config", "show", 0, 0, 0, cmd_config_show, "", "show every system setting" },
    { NULL, NULL, 0, 0, 0, NULL, NULL, NULL },
};

static void usage(FILE *f)
{
    fprintf(f, "usage: mailctl [--json] COMMAND [ARGS]\n\ncommands:\n");
    for (const command_t *c = commands; c->group; c++) {
        char line[96];
        snprintf(line, sizeof line, "%s%s%s%s%s", c->group, c->verb ? " " : "",
                 c->verb ? c->verb : "", *c->args_usage ? " " : "", c->args_usage);
        fprintf(f, "  mailctl %-38s  %s\n", line, c->help);
    }
    fprintf(f, "  mailctl %-38s  %s\n", "help", "this text");
    fprintf(f,
            "\noptions:\n"
            "  --json            print the result as JSON on stdout\n"
            "  --password-stdin  read the password as one line from standard input\n"
            "  --domain NAME     (user list) only this domain's users\n"
            "\nsettings for config set:\n");
    char expected[64];
    for (const setting_def_t *d = settings_table; d->key; d++)
        fprintf(f, "  %-24s %-34s default %s\n", d->key,
                settings_expected(d, expected, sizeof expected), d->default_value);
    fprintf(f,
            "\nThe database is DATABASE_URL, or the one named in var/postern.env in the\n"
            "current directory (written by `make run`). Changes are announced on NATS_URL\n"
            "(default nats://127.0.0.1:4222).\n"
            "Exit status: 0 done, 1 bad input or refused, 2 database unavailable.\n");
}

static const command_t *command_find(const char *group, const char *verb, bool *group_known_r)
{
    *group_known_r = false;
    for (const command_t *c = commands; c->group; c++) {
        if (strcmp(c->group, group) != 0)
            continue;
        *group_known_r = true;
        if (!c->verb || (verb && strcmp(c->verb, verb) == 0))
            return c;
    }
    return NULL;
}

static void command_line(const command_t *c)
{
    fprintf(stderr, "  mailctl %s%s%s%s%s\n", c->group, c->verb ? " " : "",
            c->verb ? c->verb : "", *c->args_usage ? " " : "", c->args_usage);
}

/* The usage of one command, or of every command of a group when cmd is NULL. */
static void command_usage(const char *group, const command_t *cmd)
{
    fprintf(stderr, "usage:\n");
    if (cmd) {
        command_line(cmd);
        return;
    }
    for (const command_t *c = commands; c->group; c++)
        if (strcmp(c->group, group) == 0)
            command_line(c);
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

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (only_pos || a[0] != '-' || a[1] == '\0') {
            pos[npos++] = argv[i];
        } else if (strcmp(a, "--") == 0) {
            only_pos = true;
        } else if (strcmp(a, "--json") == 0) {
            ctl.json = true;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
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
    bool group_known;
    const command_t *cmd = command_find(pos[0], npos > 1 ? pos[1] : NULL, &group_known);
    if (!cmd) {
        if (group_known) {
            if (npos > 1)
                ctl_error("unknown command: %s %s", pos[0], pos[1]);
            else
                ctl_error("%s needs a subcommand", pos[0]);
            command_usage(pos[0], NULL);
        } else {
            ctl_error("unknown command: %s (see mailctl --help)", pos[0]);
        }
        goto out;
    }
    int first = cmd->verb ? 2 : 1;
    int nargs = npos - first;
    if (nargs < cmd->min_args || nargs > cmd->max_args) {
        ctl_error("%s", nargs < cmd->min_args ? "missing argument" : "too many arguments");
        command_usage(cmd->group, cmd);
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

    rc = ctl_config_load(&ctl);
    if (rc == CTL_OK)
        rc = ctl_connect(&ctl);
    if (rc == CTL_OK)
        rc = cmd->run(&ctl, pos + first, nargs);
    if (ctl.in_tx)
        ctl_rollback(&ctl);
    ctl_disconnect(&ctl);
out:
    ctl_config_free(&ctl);
    free(pos);
    return rc;
}
