/* The shapes of domain names, addresses and networks an administrator may type.
 * Stricter than the RFCs allow where that keeps relay tricks out: no address literals,
 * no quoted local parts, no trailing dots, no source routes. */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "admin/admin.h"

#define DOMAIN_MAX 253
#define LABEL_MAX 63
#define LOCAL_MAX 64
#define ADDRESS_MAX 254

static void lowercase(char *s)
{
    for (; *s; s++)
        if (*s >= 'A' && *s <= 'Z')
            *s = (char)(*s - 'A' + 'a');
}

bool name_domain_check(char *name, char *why, size_t why_len)
{
    lowercase(name);
    size_t len = strlen(name);
    if (len == 0) {
        snprintf(why, why_len, "the domain name is empty");
        return false;
    }
    if (len > DOMAIN_MAX) {
        snprintf(why, why_len, "the domain name is longer than %d characters", DOMAIN_MAX);
        return false;
    }
    if (name[len - 1] == '.') {
        snprintf(why, why_len, "the domain name ends with a dot (write it without)");
        return false;
    }
    const char *label = name;
    bool all_digits = true;
    for (const char *p = name;; p++) {
        if (*p == '.' || *p == '\0') {
            size_t n = (size_t)(p - label);
            if (n == 0) {
                snprintf(why, why_len, "the domain name has an empty label (two dots, or a "
                                       "leading dot)");
                return false;
            }
            if (n > LABEL_MAX) {
                snprintf(why, why_len, "a label of the domain name is longer than %d "
                                       "characters", LABEL_MAX);
                return false;
            }
            if (label[0] == '-' || p[-1] == '-') {
                snprintf(why, why_len, "a label of the domain name starts or ends with '-'");
                return false;
            }
            if (*p == '\0')
                break;
            label = p + 1;
            all_digits = true;
            continue;
        }
        unsigned char ch = (unsigned char)*p;
        if (!(isdigit(ch) || (ch >= 'a' && ch <= 'z') || ch == '-')) {
            if (isprint(ch))
                snprintf(why, why_len, "the domain name may hold only letters, digits, '-' "
                                       "and dots, not '%c'", ch);
            else
                snprintf(why, why_len, "the domain name may hold only letters, digits, '-' "
                                       "and dots");
            return false;
        }
        if (!isdigit(ch))
            all_digits = false;
    }
    if (all_digits) {
        snprintf(why, why_len, "the domain name ends in an all-numeric label (an IP address "
                               "is not a domain)");
        return false;
    }
    return true;
}

/* RFC 5322 atext. */
static bool is_atext(unsigned char ch)
{
    return isalnum(ch) || (ch != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", ch) != NULL);
}

bool name_address_check(char *address, const char **domain_r, char *why, size_t why_len)
{
    lowercase(address);
    char *at = strchr(address, '@');
    if (!at) {
        snprintf(why, why_len, "an address needs an '@' (user@domain)");
        return false;
    }
    if (strchr(at + 1, '@')) {
        snprintf(why, why_len, "an address holds exactly one '@'");
        return false;
    }
    if (strlen(address) > ADDRESS_MAX) {
        snprintf(why, why_len, "the address is longer than %d characters", ADDRESS_MAX);
        return false;
    }
    size_t local_len = (size_t)(at - address);
    if (local_len == 0) {
        snprintf(why, why_len, "the part before '@' is empty");
        return false;
    }
    if (local_len > LOCAL_MAX) {
        snprintf(why, why_len, "the part before '@' is longer than %d characters", LOCAL_MAX);
        return false;
    }
    for (size_t i = 0; i < local_len; i++) {
        unsigned char ch = (unsigned char)address[i];
        if (ch == '.') {
            if (i == 0 || i + 1 == local_len || address[i + 1] == '.') {
                snprintf(why, why_len, "the part before '@' may not start or end with a dot, "
                                       "nor hold two dots in a row");
                return false;
            }
        } else if (!is_atext(ch)) {
            if (isprint(ch))
                snprintf(why, why_len, "the part before '@' may not hold '%c'", ch);
            else
                snprintf(why, why_len, "the part before '@' may hold only printable ASCII "
                                       "letters, digits and !#$%%&'*+-/=?^_`{|}~.");
            return false;
        }
    }
    if (!name_domain_check(at + 1, why, why_len))
        return false;
    *domain_r = at + 1;
    return true;
}

bool name_cidr_chars(const char *text)
{
    size_t n = strlen(text);
    return n > 0 && n <= 64 && strspn(text, "0123456789abcdefABCDEF.:/") == n;
}

bool name_copy(char *dst, const char *src, const char *what)
{
    size_t n = strlen(src);
    if (n >= NAME_BUF) {
        ctl_error("the %s is too long", what);
        return false;
    }
    memcpy(dst, src, n + 1);
    return true;
}

/* Room for the reasons name_domain_check() and name_address_check() give. */
#define WHY_MAX 200

int name_domain_arg(const char *arg, char *name)
{
    char why[WHY_MAX];
    if (!name_copy(name, arg, "domain name"))
        return CTL_USAGE;
    if (!name_domain_check(name, why, sizeof why))
        return ctl_error("invalid domain name: %s", why);
    return CTL_OK;
}

int name_address_arg(const char *arg, char *address, const char **domain_r)
{
    char why[WHY_MAX];
    if (!name_copy(address, arg, "address"))
        return CTL_USAGE;
    if (!name_address_check(address, domain_r, why, sizeof why))
        return ctl_error("invalid address: %s", why);
    return CTL_OK;
}
