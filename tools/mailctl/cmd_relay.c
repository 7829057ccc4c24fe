/* mailctl relay mode|allow|deny|list. The relay list is a network list (netlist.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mailctl.h"
#include "base/settings.h"

#define RELAY_MODE_KEY "relay.mode"

/* The effective relay mode (malloc'd) in *mode_r. */
static int relay_mode_get(ctl_t *ctl, char **mode_r)
{
    int rc = setting_get(ctl, RELAY_MODE_KEY, mode_r);
    if (rc != CTL_OK)
        return rc;
    const setting_def_t *def = settings_find(RELAY_MODE_KEY);
    if (!*mode_r || !settings_valid(def, *mode_r)) {
        free(*mode_r);
        *mode_r = strdup(def->default_value);
    }
    return CTL_OK;
}

int cmd_relay_mode(ctl_t *ctl, char **args, int nargs)
{
    (void)nargs;
    const setting_def_t *def = settings_find(RELAY_MODE_KEY);
    char mode[16];
    if (strlen(args[0]) >= sizeof mode)
        return ctl_error("unknown relay mode: use none, select or anyone");
    strcpy(mode, args[0]);
    for (char *c = mode; *c; c++)
        if (*c >= 'A' && *c <= 'Z')
            *c = (char)(*c - 'A' + 'a');
    if (!settings_valid(def, mode))
        return ctl_error("unknown relay mode '%s': use none, select or anyone", args[0]);

    char *old = NULL;
    int rc = ctl_begin(ctl);
    if (rc == CTL_OK)
        rc = relay_mode_get(ctl, &old);
    if (rc == CTL_OK)
        rc = setting_put(ctl, RELAY_MODE_KEY, mode);
    if (rc == CTL_OK)
        rc = ctl_audit_commit(ctl, "relay mode", mode);
    if (rc != CTL_OK) {
        free(old);
        return rc;
    }
    if (ctl->json) {
        out_json_ok("relay mode", "mode", mode);
        printf(",\"previous\":");
        json_str(stdout, old);
        printf("}\n");
    } else {
        printf("relay mode: %s (was %s)\n", mode, old ? old : "?");
    }
    fflush(stdout);
    free(old);
    if (strcmp(mode, "anyone") == 0)
        relay_open_warning();
    ctl_announce(ctl, "relay");
    return CTL_OK;
}

static const netlist_t relay_list = {
    .table = "relay_networks",
    .name = "the relay list",
    .add_action = "relay allow",
    .del_action = "relay deny",
    .added = "added to the relay list:",
    .present = "already in the relay list (nothing changed):",
    .removed = "removed from the relay list:",
};

/* netlist_added_fn: the relay mode, for the note after the change. */
static int relay_allowed_cb(ctl_t *ctl, const char *net, void *arg)
{
    (void)net;
    return relay_mode_get(ctl, arg);
}

int cmd_relay_allow(ctl_t *ctl, char **args, int nargs)
{
    (void)nargs;
    char *mode = NULL;
    bool added;
    int rc = netlist_add(ctl, &relay_list, args[0], relay_allowed_cb, &mode, &added);
    if (rc == CTL_OK && added) {
        if (mode && strcmp(mode, "select") != 0)
            fprintf(stderr,
                    "mailctl: note: relay.mode is %s; the relay list is used only in mode "
                    "select (mailctl relay mode select)\n",
                    mode);
        ctl_announce(ctl, "relay");
    }
    free(mode);
    return rc;
}

int cmd_relay_deny(ctl_t *ctl, char **args, int nargs)
{
    (void)nargs;
    int rc = netlist_del(ctl, &relay_list, args[0]);
    if (rc == CTL_OK)
        ctl_announce(ctl, "relay");
    return rc;
}

int cmd_relay_list(ctl_t *ctl, char **args, int nargs)
{
    (void)args;
    (void)nargs;
    char *mode = NULL;
    int rc = relay_mode_get(ctl, &mode);
    if (rc != CTL_OK)
        return rc;
    PGresult *res = netlist_query(ctl, &relay_list);
    if (!res) {
        free(mode);
        return CTL_DB;
    }
    if (ctl->json) {
        printf("{\"mode\":");
        json_str(stdout, mode);
        printf(",\"networks\":");
        netlist_print_json(res);
        printf("}\n");
    } else {
        printf("relay mode: %s\n", mode);
        if (strcmp(mode, "anyone") == 0)
            printf("WARNING: this server is an OPEN RELAY\n");
        if (PQntuples(res) == 0) {
            printf("relay list: empty\n");
        } else {
            if (strcmp(mode, "select") != 0)
                printf("relay list (used only in mode select):\n");
            else
                printf("relay list:\n");
            netlist_print_table(res, "  ");
        }
    }
    PQclear(res);
    free(mode);
    return CTL_OK;
}
