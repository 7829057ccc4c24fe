/* The command table of the administrator's operations (mailctl's commands, webd's API
 * calls) and running one. */
#include <string.h>

#include "admin/admin.h"

const command_t admin_commands[] = {
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
    { "user", "logins", NULL, 0, 0, CMD_OPTIONS, cmd_user_logins, "ADDRESS [--limit N]",
      "a user's latest logins, good and bad, newest first" },
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
      "[--service smtp|pop3|imap|web] [--enabled on|off] [--max-failures N]"
      " [--interval SECONDS] [--block SECONDS] [--soft-limit N] [--hard-limit N]",
      "set harvesting limits for every service, or for one" },
    { "harvest", "unset", NULL, 0, 0, CMD_OPTIONS, cmd_harvest_unset,
      "[--service smtp|pop3|imap|web] (--all | [--enabled] [--max-failures] [--interval]"
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
    { "admin", "add", NULL, 0, 0, CMD_OPTIONS, cmd_admin_add,
      "NAME [--role system|domain] [--domains D1[,D2...]] [--password-stdin]",
      "add a web console admin (a domain admin manages only its domains)" },
    { "admin", "passwd", NULL, 1, 1, CMD_PASSWORD, cmd_admin_passwd,
      "NAME [--password-stdin]", "set a web admin's password (ends its sessions)" },
    { "admin", "del", NULL, 1, 1, 0, cmd_admin_del, "NAME", "delete a web admin" },
    { "admin", "list", NULL, 0, 0, 0, cmd_admin_list, "", "list the web admins" },
    { NULL, NULL, NULL, 0, 0, 0, NULL, NULL, NULL },
};

const command_t *admin_command_find(char **words, int nwords, int *used_r,
                                    bool *group_known_r)
{
    *group_known_r = false;
    *used_r = 0;
    for (const command_t *c = admin_commands; c->group; c++) {
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

int admin_command_run(ctl_t *ctl, const command_t *cmd, char **args, int nargs)
{
    int rc = CTL_OK;
    if (!(cmd->flags & CMD_NO_DB) && !ctl->pg)
        rc = ctl_connect(ctl);
    if (rc == CTL_OK)
        rc = cmd->run(ctl, args, nargs);
    if (ctl->in_tx)
        ctl_rollback(ctl);
    ctl_disconnect(ctl);
    return rc;
}
