/* webd: the dashboard's figures, one statement, cheap enough to refresh every few seconds:
 * messages stored in the last hour (looked for among the newest 100,000 only, through the
 * primary key), logins and failed logins in the last hour (the limiter's login history),
 * blocks in force, throttled users, disabled accounts, the outbound queue and the age of
 * its oldest message. */
#include <stdio.h>
#include <string.h>

#include "webd.h"

static const char *const figures[] = {
    "messages_hour", "logins_hour", "failures_hour", "blocks",     "exemptions",
    "throttled",     "disabled",    "queue",         "queue_age_s", "domains",
    "users",
};

void web_dashboard(web_t *web, web_resp_t *w)
{
    PGconn *pg = pgpool_get(web->pool);
    if (!pg) {
        web_json_error(w, 503, "the database is not available: try again shortly");
        return;
    }
    PGresult *res = PQexec(
        pg,
        "SELECT"
        " (SELECT count(*) FROM messages WHERE id > (SELECT coalesce(max(id), 0) - 100000"
        "   FROM messages) AND internal_date > now() - interval '1 hour'),"
        " (SELECT count(*) FROM logins WHERE at > now() - interval '1 hour'),"
        " (SELECT count(*) FROM logins WHERE at > now() - interval '1 hour'"
        "   AND result <> 'ok'),"
        " (SELECT count(*) FROM blocks WHERE until > now()),"
        " (SELECT count(*) FROM harvest_exempt),"
        " (SELECT count(*) FROM hamr_throttled WHERE until > now()),"
        " (SELECT count(*) FROM send_disabled),"
        " (SELECT count(*) FROM outbound_queue),"
        " (SELECT coalesce(extract(epoch FROM now() - min(created_at))::bigint, 0)"
        "   FROM outbound_queue),"
        " (SELECT count(*) FROM domains),"
        " (SELECT count(*) FROM users)");
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        web_json_error(w, 503, "the figures could not be read: %s",
                       strtok(PQresultErrorMessage(res), "\n") ?: "no row");
    } else {
        w->status = 200;
        w->type = "application/json";
        buf_reset(&w->body);
        buf_puts(&w->body, "{");
        for (size_t i = 0; i < sizeof figures / sizeof figures[0]; i++)
            buf_printf(&w->body, "%s\"%s\":%s", i ? "," : "", figures[i],
                       PQgetvalue(res, 0, (int)i));
        buf_puts(&w->body, "}");
    }
    PQclear(res);
    pgpool_put(web->pool, pg);
}
