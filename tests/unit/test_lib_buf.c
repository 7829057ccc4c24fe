/* The byte buffer (lib/base/buf.c): the data stays NUL-terminated, a capped buffer never
 * grows past its cap and is left as it was when an append does not fit, prepend moves the
 * data, consume gives a large emptied buffer's memory back, and a number is written as printf
 * writes it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "base/buf.h"

static void test_append_keeps_a_nul_after_the_data(void **state)
{
    (void)state;
    buf_t b;
    buf_init(&b);
    assert_int_equal(b.len, 0);
    assert_string_equal(b.data, "");
    assert_int_equal(buf_append(&b, "abc", 3), 0);
    assert_int_equal(buf_puts(&b, "def"), 0);
    assert_int_equal(buf_printf(&b, "%d", 42), 0);
    assert_int_equal(b.len, 8);
    assert_string_equal(b.data, "abcdef42");
    buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_string_equal(b.data, "");
    assert_true(b.cap > 0); /* kept for reuse */
    buf_free(&b);
    assert_int_equal(b.cap, 0);
}

static void test_put_uint_writes_what_printf_does(void **state)
{
    (void)state;
    static const uint64_t values[] = { 0, 7, 10, 4294967295u, UINT64_MAX };
    buf_t b, want;
    buf_init(&b);
    buf_init(&want);
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        assert_int_equal(buf_put_uint(&b, values[i]), 0);
        buf_puts(&b, " ");
        buf_printf(&want, "%llu ", (unsigned long long)values[i]);
    }
    assert_string_equal(b.data, want.data);
    buf_free(&b);
    buf_free(&want);
}

static void test_capped_never_grows_past_the_cap(void **state)
{
    (void)state;
    char chunk[1000];
    memset(chunk, 'x', sizeof chunk);
    buf_t b;
    buf_init(&b);
    const size_t cap = 5000; /* the NUL counts: 4999 bytes of data at most */
    for (int i = 0; i < 4; i++)
        assert_int_equal(buf_append_capped(&b, chunk, sizeof chunk, cap), 0);
    assert_true(b.cap <= cap);
    /* 4000 held: 999 more fit, 1000 do not; a refused append changes nothing */
    assert_int_equal(buf_append_capped(&b, chunk, 1000, cap), -1);
    assert_int_equal(b.len, 4000);
    assert_int_equal(b.data[b.len], '\0');
    assert_int_equal(buf_append_capped(&b, chunk, 999, cap), 0);
    assert_int_equal(b.len, 4999);
    assert_int_equal(b.cap, cap);
    assert_int_equal(b.data[b.len], '\0');
    assert_int_equal(buf_append_capped(&b, "y", 1, cap), -1);
    assert_int_equal(b.len, 4999);
    /* a length that would wrap the arithmetic is refused, not wrapped */
    assert_int_equal(buf_append_capped(&b, chunk, (size_t)-1, cap), -1);
    assert_int_equal(buf_append_capped(&b, chunk, (size_t)-1, (size_t)-1), -1);
    assert_int_equal(b.len, 4999);
    buf_free(&b);
}

static void test_capped_on_an_empty_buffer(void **state)
{
    (void)state;
    buf_t b;
    buf_init(&b);
    /* a cap below the first allocation's 256 bytes is kept to */
    assert_int_equal(buf_append_capped(&b, "0123456789", 10, 11), 0);
    assert_int_equal(b.cap, 11);
    assert_string_equal(b.data, "0123456789");
    assert_int_equal(buf_append_capped(&b, "a", 1, 11), -1);
    buf_free(&b);
    buf_init(&b);
    assert_int_equal(buf_append_capped(&b, "abc", 3, 3), -1); /* no room for the NUL */
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 0);
    buf_free(&b);
}

static void test_prepend_moves_the_data(void **state)
{
    (void)state;
    buf_t b;
    buf_init(&b);
    assert_int_equal(buf_prepend(&b, "tail", 4), 0); /* on an empty buffer */
    assert_string_equal(b.data, "tail");
    assert_int_equal(buf_prepend(&b, "head ", 5), 0);
    assert_string_equal(b.data, "head tail");
    assert_int_equal(b.len, 9);
    assert_int_equal(buf_prepend(&b, "", 0), 0);
    assert_string_equal(b.data, "head tail");
    /* past the first allocation: the whole content moves with the growth */
    char big[600];
    memset(big, 'z', sizeof big);
    assert_int_equal(buf_prepend(&b, big, sizeof big), 0);
    assert_int_equal(b.len, 609);
    assert_memory_equal(b.data, big, sizeof big);
    assert_string_equal(b.data + sizeof big, "head tail");
    buf_free(&b);
}

static void test_consume_gives_a_large_buffer_back(void **state)
{
    (void)state;
    buf_t b;
    buf_init(&b);
    assert_int_equal(buf_puts(&b, "abcdef"), 0);
    buf_consume(&b, 2);
    assert_string_equal(b.data, "cdef");
    buf_consume(&b, 4);
    assert_int_equal(b.len, 0);
    assert_true(b.cap > 0); /* small: kept */
    static char burst[BUF_KEEP * 2];
    assert_int_equal(buf_append(&b, burst, sizeof burst), 0);
    assert_true(b.cap > BUF_KEEP);
    buf_consume(&b, sizeof burst);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 0); /* given back */
    assert_string_equal(b.data, "");
    buf_free(&b);
}

static void test_recycled_buffer_serves_the_next_one(void **state)
{
    (void)state;
    static char big[100 * 1024];
    memset(big, 'x', sizeof big);
    buf_t a, b, c;
    buf_init(&a);
    buf_init(&b);
    buf_init(&c);
    assert_int_equal(buf_append(&a, big, sizeof big), 0); /* grows to 128 KiB */
    size_t cap = a.cap;
    char *mem = a.data;
    assert_true(cap >= BUF_SPARE_MIN && cap <= BUF_SPARE_MAX);
    buf_recycle(&a);
    assert_int_equal(a.cap, 0); /* freed as far as a knows */
    assert_string_equal(a.data, "");
    /* A need that stays under BUF_SPARE_MIN takes nothing: b grows on its own. */
    buf_from_spare(&b, 10);
    assert_int_equal(b.cap, 0);
    /* What b holds moves into the spare, and the spare is b's now. */
    assert_int_equal(buf_puts(&b, "head "), 0);
    buf_from_spare(&b, sizeof big);
    assert_ptr_equal(b.data, mem);
    assert_int_equal(b.cap, cap);
    assert_string_equal(b.data, "head ");
    assert_int_equal(buf_append(&b, big, sizeof big), 0);
    assert_ptr_equal(b.data, mem); /* no growth */
    assert_int_equal(b.len, 5 + sizeof big);
    /* Taken: the next one gets none. */
    buf_from_spare(&c, sizeof big);
    assert_int_equal(c.cap, 0);
    /* A buffer past BUF_SPARE_MAX is not kept. */
    static char huge[BUF_SPARE_MAX];
    assert_int_equal(buf_append(&c, huge, sizeof huge), 0);
    assert_true(c.cap > BUF_SPARE_MAX);
    buf_recycle(&c);
    buf_init(&a);
    buf_from_spare(&a, sizeof big);
    assert_int_equal(a.cap, 0);
    /* Over a memory budget, the spares go. */
    buf_recycle(&b);
    assert_true(buf_drop_spares());
    assert_false(buf_drop_spares());
    buf_from_spare(&a, sizeof big);
    assert_int_equal(a.cap, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_append_keeps_a_nul_after_the_data),
        cmocka_unit_test(test_put_uint_writes_what_printf_does),
        cmocka_unit_test(test_capped_never_grows_past_the_cap),
        cmocka_unit_test(test_capped_on_an_empty_buffer),
        cmocka_unit_test(test_prepend_moves_the_data),
        cmocka_unit_test(test_consume_gives_a_large_buffer_back),
        cmocka_unit_test(test_recycled_buffer_serves_the_next_one),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
