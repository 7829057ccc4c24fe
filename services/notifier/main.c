/* notifier: mails the administrators the alerts the limiter asks for (notifier.h). The
 * process is the service skeleton (lib/svc/service.h), whose environment it reads:
 * DATABASE_URL, NATS_URL, DB_POOL (default 2), CONFIG_REFRESH, HEALTH_PORT, SMTP_HOSTNAME
 * (this host's name in Received: and Message-ID:; default the system's host name); and
 * QUEUE_REFRESH (service.c). */
#include "notifier.h"

static const svc_def_t notifier = {
    .name = "notifier",
    .db_pool = 2,
    .want_config = true,
    .start = ntf_service_start,
    .stop = ntf_service_stop,
    .destroy = ntf_service_destroy,
};

int main(void)
{
    return svc_main(&notifier);
}
