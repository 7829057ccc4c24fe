/* lib/base/settings.c, the keys the notifier, the limiter and mailctl read: a table of keys and
 * values, each valid or not, and the per-service harvesting keys that fall back to the
 * system key. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "base/settings.h"

typedef struct value_case {
    const char *key, *value;
    bool valid;
} value_case_t;

static const value_case_t value_cases[] = {
    { "hamr.enabled", "on", true },
    { "hamr.enabled", "yes", false },
    { "hamr.max_messages", "1", true },
    { "hamr.max_messages", "1000000", true },
    { "hamr.max_messages", "0", false },
    { "hamr.max_messages", "1000001", false },
    { "hamr.max_messages", "010", false },
    { "hamr.interval", "2592000", true },
    { "hamr.interval", "2592001", false },
    { "hamr.action", "throttle", true },
    { "hamr.action", "disable", true },
    { "hamr.action", "block", false },
    { "hamr.action", "", false },
    { "hamr.max_recipients", "0", true },
    { "hamr.max_recipients", "10000000", true },
    { "hamr.max_recipients", "-1", false },
    { "hamr.alert_owner", "off", true },
    { "harvest.max_failures", "100000", true },
    { "harvest.max_failures", "0", false },
    { "harvest.block", "1", true },
    { "harvest.soft_limit", "5", true },
    { "harvest.hard_limit", "20", true },
    { "harvest.smtp.max_failures", "3", true },
    { "harvest.pop3.block", "0", false },
    { "harvest.imap.enabled", "off", true },
    { "limiter.timeout_ms", "50", true },
    { "limiter.timeout_ms", "49", false },
    { "limiter.timeout_ms", "10001", false },
    { "limiter.send_on_timeout", "allow", true },
    { "limiter.send_on_timeout", "deny", false },
    { "limiter.login_on_timeout", "deny", true },
    { "limiter.login_on_timeout", "tempfail", false },
    { "notifier.from", "", true },
    { "notifier.from", "alerts@example.test", true },
    { "notifier.from", "a.b+c@mail.example.test", true },
    { "notifier.from", "Alerts@example.test", false }, /* canonical is lower case */
    { "notifier.from", "alerts@localhost", false },
    { "notifier.from", "alerts example.test", false },
    { "notifier.from", "a@example.test\r\nBcc: x@example.test", false },
    { "notifier.from", "<a@example.test>", false },
    { "notifier.from", ".a@example.test", false },
    { "notifier.from", "a..b@example.test", false },
    { "notifier.from", "a@-x.example.test", false },
    { "notifier.from", "a@example..test", false },
    { "notifier.interval", "3600", true },
    { "notifier.interval", "0", false },
};

static void test_values(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof value_cases / sizeof value_cases[0]; i++) {
        const value_case_t *c = &value_cases[i];
        const setting_def_t *def = settings_find(c->key);
        if (!def)
            fail_msg("%s: unknown", c->key);
        if (settings_valid(def, c->value) != c->valid)
            fail_msg("%s = '%s': expected %s", c->key, c->value, c->valid ? "valid" : "invalid");
    }
}

static void test_defaults_are_valid(void **state)
{
    (void)state;
    for (const setting_def_t *d = settings_table; d->key; d++)
        if (!settings_valid(d, d->default_value))
            fail_msg("%s: its default '%s' is not valid", d->key, d->default_value);
    const setting_def_t *d = settings_find("notifier.from");
    assert_string_equal(d->default_value, "");
    assert_int_equal(settings_int(settings_find("hamr.max_messages"), NULL), 100);
    assert_int_equal(settings_int(settings_find("harvest.smtp.block"), "77"), 77);
    assert_int_equal(settings_int(settings_find("harvest.smtp.block"), "0"), 3600);
}

static void test_per_service_keys(void **state)
{
    (void)state;
    static const struct {
        const char *key, *fallback;
    } cases[] = {
        { "harvest.smtp.enabled", "harvest.enabled" },
        { "harvest.pop3.max_failures", "harvest.max_failures" },
        { "harvest.imap.interval", "harvest.interval" },
        { "harvest.imap.block", "harvest.block" },
        { "harvest.smtp.soft_limit", NULL }, /* system only */
        { "harvest.ftp.block", NULL },
        { "harvest.smtp", NULL },
        { "harvest.smtp.", NULL },
        { "harvest..block", NULL },
        { "harvest.block", NULL },
        { "hamr.smtp.enabled", NULL },
        { "harvest.smtpx.block", NULL },
        { "harvest.smtp.block.x", NULL },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char buf[64];
        const char *fb = settings_fallback_key(cases[i].key, buf, sizeof buf);
        if (!cases[i].fallback) {
            if (fb)
                fail_msg("%s: fallback %s, expected none", cases[i].key, fb);
            if (strcmp(cases[i].key, "harvest.block") != 0)
                assert_null(settings_find(cases[i].key));
            continue;
        }
        if (!fb || strcmp(fb, cases[i].fallback) != 0)
            fail_msg("%s: fallback %s, expected %s", cases[i].key, fb ? fb : "none",
                     cases[i].fallback);
        const setting_def_t *def = settings_find(cases[i].key);
        assert_non_null(def);
        assert_string_equal(def->key, cases[i].fallback);
    }
    char tiny[8];
    assert_null(settings_fallback_key("harvest.smtp.max_failures", tiny, sizeof tiny));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_defaults_are_valid),
        cmocka_unit_test(test_per_service_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
