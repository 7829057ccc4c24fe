/* smtpd: settings and listeners (protocol.c); everything else is the shared front-end
 * skeleton. */
#include "smtpd.h"

int main(void)
{
    return fe_main(&smtp_protocol, "SMTP_HOSTNAME");
}
