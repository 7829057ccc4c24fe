/* Reading a new password, from the terminal without echo or from stdin. The
 * password never reaches argv, the environment, the audit log or an error message, and
 * its buffers are wiped before they are freed. */
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "admin/admin.h"
#include "auth/scram.h"

#define PASSWORD_MAX 1024

/* The terminal state to put back if a signal interrupts the prompt. Only the signal
 * handler and tty_read touch these. */
static volatile sig_atomic_t tty_saved_valid;
static struct termios tty_saved;
static int tty_fd = -1;

static void tty_signal_cb(int sig)
{
    if (tty_saved_valid)
        tcsetattr(tty_fd, TCSAFLUSH, &tty_saved);
    signal(sig, SIG_DFL);
    raise(sig);
}

void password_free(char *pw, size_t len)
{
    if (!pw)
        return;
    OPENSSL_cleanse(pw, len);
    free(pw);
}

/* Reads one line from the terminal with echo off, into buf (NUL-terminated). Returns its
 * length, -1 on error, -2 when it is too long. */
static ssize_t tty_read(int fd, const char *prompt, char *buf, size_t buf_len)
{
    struct termios t;
    if (tcgetattr(fd, &t) < 0)
        return -1;
    tty_saved = t;
    tty_fd = fd;
    tty_saved_valid = 1;
    struct sigaction sa = { 0 }, old_int, old_term, old_hup, old_quit, old_tstp;
    sa.sa_handler = tty_signal_cb;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    sigaction(SIGHUP, &sa, &old_hup);
    sigaction(SIGQUIT, &sa, &old_quit);
    sigaction(SIGTSTP, &sa, &old_tstp);

    t.c_lflag &= ~(tcflag_t)(ECHO | ECHOE | ECHOK);
    t.c_lflag |= ICANON | ECHONL;
    ssize_t result = -1;
    if (tcsetattr(fd, TCSAFLUSH, &t) == 0) {
        if (write(fd, prompt, strlen(prompt)) < 0) {
            /* the prompt is a courtesy; go on */
        }
        size_t n = 0;
        bool too_long = false;
        for (;;) {
            char ch;
            ssize_t r = read(fd, &ch, 1);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0) { /* error, or end of input (Ctrl-D) */
                result = r == 0 && n > 0 ? (ssize_t)n : -1;
                break;
            }
            if (ch == '\n' || ch == '\r') {
                result = (ssize_t)n;
                break;
            }
            if (n + 1 < buf_len)
                buf[n++] = ch;
            else
                too_long = true;
        }
        buf[n] = '\0';
        if (too_long)
            result = -2;
        tcsetattr(fd, TCSAFLUSH, &tty_saved);
    }
    tty_saved_valid = 0;
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    sigaction(SIGHUP, &old_hup, NULL);
    sigaction(SIGQUIT, &old_quit, NULL);
    sigaction(SIGTSTP, &old_tstp, NULL);
    return result;
}

static int password_from_tty(char **pw_r, size_t *len_r)
{
    int fd = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (fd < 0 || !isatty(fd)) {
        if (fd >= 0)
            close(fd);
        return ctl_error("no terminal to ask for the password on: use --password-stdin");
    }
    char *a = calloc(1, PASSWORD_MAX + 1), *b = calloc(1, PASSWORD_MAX + 1);
    int rc = CTL_USAGE;
    if (!a || !b) {
        ctl_error("out of memory");
        goto out;
    }
    ssize_t na = tty_read(fd, "New password: ", a, PASSWORD_MAX + 1);
    if (na == -2) {
        ctl_error("the password is too long (at most %d bytes)", PASSWORD_MAX);
        goto out;
    }
    if (na < 0) {
        ctl_error("could not read the password from the terminal");
        goto out;
    }
    if (na == 0) {
        ctl_error("the password is empty: nothing changed");
        goto out;
    }
    ssize_t nb = tty_read(fd, "Again: ", b, PASSWORD_MAX + 1);
    if (nb < 0 || nb != na || memcmp(a, b, (size_t)na) != 0) {
        ctl_error("the passwords do not match: nothing changed");
        goto out;
    }
    *pw_r = a;
    *len_r = (size_t)na;
    a = NULL;
    rc = CTL_OK;
out:
    password_free(a, PASSWORD_MAX + 1);
    password_free(b, PASSWORD_MAX + 1);
    close(fd);
    return rc;
}

/* One line from standard input, read with read(2) so that no stdio buffer keeps a copy. */
static int password_from_stdin(char **pw_r, size_t *len_r)
{
    char *buf = calloc(1, PASSWORD_MAX + 2);
    if (!buf)
        return ctl_error("out of memory");
    size_t n = 0;
    bool eol = false;
    int rc = CTL_USAGE;
    while (n < PASSWORD_MAX + 1) {
        char ch;
        ssize_t r = read(STDIN_FILENO, &ch, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            ctl_error("cannot read the password from standard input: %s", strerror(errno));
            goto out;
        }
        if (r == 0)
            break;
        if (ch == '\n') {
            eol = true;
            break;
        }
        buf[n++] = ch;
    }
    if (!eol && n > PASSWORD_MAX) {
        ctl_error("the password is too long (at most %d bytes)", PASSWORD_MAX);
        goto out;
    }
    if (n > 0 && buf[n - 1] == '\r')
        buf[--n] = '\0';
    if (n == 0) {
        ctl_error("the password is empty: nothing changed");
        goto out;
    }
    if (memchr(buf, '\0', n)) {
        ctl_error("the password holds a NUL byte");
        goto out;
    }
    *pw_r = buf;
    *len_r = n;
    buf = NULL;
    rc = CTL_OK;
out:
    password_free(buf, PASSWORD_MAX + 2);
    return rc;
}

/* A password the caller holds (webd: from the request), checked like one from stdin. */
static int password_given(const char *given, char **pw_r, size_t *len_r)
{
    size_t n = strlen(given);
    if (n == 0)
        return ctl_error("the password is empty: nothing changed");
    if (n > PASSWORD_MAX)
        return ctl_error("the password is too long (at most %d bytes)", PASSWORD_MAX);
    char *buf = calloc(1, PASSWORD_MAX + 2);
    if (!buf)
        return ctl_error("out of memory");
    memcpy(buf, given, n);
    *pw_r = buf;
    *len_r = n;
    return CTL_OK;
}

int password_read_new(ctl_t *ctl, char **pw_r, size_t *len_r)
{
    *pw_r = NULL;
    *len_r = 0;
    if (ctl->password)
        return password_given(ctl->password, pw_r, len_r);
    return ctl->password_stdin ? password_from_stdin(pw_r, len_r) : password_from_tty(pw_r, len_r);
}

int password_secret_new(ctl_t *ctl, char *secret)
{
    char *pw = NULL;
    size_t len = 0;
    int rc = password_read_new(ctl, &pw, &len);
    if (rc != CTL_OK)
        return rc;
    scram_secret_t s;
    bool ok = scram_secret_make(pw, len, SCRAM_DEFAULT_ITERATIONS, &s) == 0 &&
              scram_secret_encode(&s, secret, SCRAM_SECRET_TEXT_MAX) == 0;
    OPENSSL_cleanse(&s, sizeof s);
    password_free(pw, len);
    return ok ? CTL_OK : ctl_error("could not derive the password secret");
}
