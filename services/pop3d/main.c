/* pop3d: settings and listeners (protocol.c); everything else is the shared front-end
 * skeleton. */
#include "pop3d.h"

int main(void)
{
    return fe_main(&pop3_protocol, "POP3_HOSTNAME");
}
