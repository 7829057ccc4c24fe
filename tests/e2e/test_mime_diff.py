"""lib/mail against Dovecot: ENVELOPE, BODYSTRUCTURE and BODY of every message in
tests/corpus/mime, from tests/tools/mime_dump and from a private Dovecot IMAP server
(tests/e2e/dovecot.py) given the same bytes with APPEND, compared as parsed IMAP data.

Case is ignored where IMAP ignores it (RFC 3501 section 9 and RFC 2045): body type and
subtype, parameter names, the transfer encoding, the disposition type, and the charset
of an RFC 2231 extended value; strings and literals are the same thing. Where Postern
chooses to differ from Dovecot, the case is in EXPECTED_DIFFERENCES with the reason and
the exact part that differs, and the test checks that it still differs only there.

    POSTERN_BIN=build/bin /usr/bin/python3 -m pytest -q tests/e2e/test_mime_diff.py

mime_dump is $POSTERN_BIN/../tests/tools/mime_dump. Needs dovecot-imapd (deploy/deps.sh).
"""

import os
import re
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from dovecot import Dovecot, dovecot_available  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CORPUS = os.path.join(ROOT, "tests", "corpus", "mime")
BIN = os.environ.get("POSTERN_BIN", os.path.join(ROOT, "build", "bin"))
MIME_DUMP = os.path.join(os.path.abspath(BIN), "..", "tests", "tools", "mime_dump")
FILES = sorted(f for f in os.listdir(CORPUS) if f.endswith(".eml"))

# file -> {item: (reason, {path: (postern value, dovecot value)})}: the leaves that differ, by
# their path in the normalised tree (indices into nested lists). Nothing else may differ.
EXPECTED_DIFFERENCES = {
    "15-bad-content-type.eml": {
        "BODYSTRUCTURE": (
            "Content-Type 'this is not a type' does not parse: Postern (GMime) takes the "
            "RFC 2045 section 5.2 default and shows a basic part application/octet-stream; "
            "Dovecot shows empty type and subtype strings",
            {(0,): ("application", ""), (1,): ("octet-stream", "")},
        ),
        "BODY": (
            "as BODYSTRUCTURE",
            {(0,): ("application", ""), (1,): ("octet-stream", "")},
        ),
    },
    "16-lf-plain.eml": {
        "BODYSTRUCTURE": (
            "bare LF line ends: Postern counts the octets as stored (they match what "
            "BODY[...] hands out), Dovecot counts every LF as CRLF",
            {(6,): ("48", "50")},
        ),
        "BODY": ("as BODYSTRUCTURE", {(6,): ("48", "50")}),
    },
    "18-lf-multipart.eml": {
        "BODYSTRUCTURE": (
            "bare LF line ends: octets as stored (see 16-lf-plain.eml)",
            {(0, 6): ("7", "8"), (1, 6): ("7", "8")},
        ),
        "BODY": ("as BODYSTRUCTURE", {(0, 6): ("7", "8"), (1, 6): ("7", "8")}),
    },
}


# ---- IMAP data as trees (RFC 3501 section 9: nil, number, string, literal, lists) ----------

class Literal(bytes):
    """A string that was sent as a literal (compared like any string)."""


def parse_sexp(data):
    """Parses one IMAP value from bytes; returns (value, rest). Lists are Python lists,
    NIL is None, numbers and atoms are str, strings and literals are bytes."""
    data = data.lstrip(b" ")
    if not data:
        raise ValueError("unexpected end")
    c = data[:1]
    if c == b"(":
        items, rest = [], data[1:]
        while True:
            rest = rest.lstrip(b" ")
            if rest[:1] == b")":
                return items, rest[1:]
            item, rest = parse_sexp(rest)
            items.append(item)
    if c == b'"':
        out, i = bytearray(), 1
        while data[i:i + 1] != b'"':
            if data[i:i + 1] == b"\\":
                i += 1
            if i >= len(data):
                raise ValueError("unterminated quoted string")
            out += data[i:i + 1]
            i += 1
        return bytes(out), data[i + 1:]
    m = re.match(rb"\{(\d+)\}\r\n", data)
    if m:
        n = int(m.group(1))
        start = m.end()
        if len(data) < start + n:
            raise ValueError("short literal")
        return Literal(data[start:start + n]), data[start + n:]
    m = re.match(rb"[^ ()\"{]+", data)
    if not m:
        raise ValueError("bad token at %r" % data[:20])
    atom = m.group(0).decode()
    return (None if atom.upper() == "NIL" else atom), data[m.end():]


def parse_one(data):
    value, rest = parse_sexp(data)
    if rest.strip():
        raise ValueError("trailing data %r" % rest[:40])
    return value


def parse_fetch(raw):
    """The items of one untagged FETCH response (imaplib's data) as {NAME: tree}."""
    # imaplib splits at each literal: (b'... {n}', content); the CRLF after {n} is dropped.
    data = b""
    for x in raw:
        if isinstance(x, tuple):
            data += x[0] + b"\r\n" + x[1]
        else:
            data += x
    m = re.match(rb"\d+ ", data)
    tree = parse_one(data[m.end():])
    items = {}
    for i in range(0, len(tree), 2):
        items[tree[i].upper()] = tree[i + 1]
    return items


def s(v):
    return v.decode("latin-1") if isinstance(v, bytes) else v


def low(v):
    return s(v).lower() if v is not None else None


def norm_params(p):
    if p is None:
        return None
    out = []
    for i in range(0, len(p), 2):
        k, v = low(p[i]), s(p[i + 1])
        if k.endswith("*") and v is not None and "'" in v:
            cs, rest = v.split("'", 1)
            v = cs.lower() + "'" + rest
        out += [k, v]
    return out


def norm_disp(d):
    if d is None:
        return None
    return [low(d[0]), norm_params(d[1])] + [s(x) for x in d[2:]]


def norm_env(e):
    if isinstance(e, list):
        return [norm_env(x) for x in e]
    return s(e)


def norm_body(b, ext):
    """Puts a body/bodystructure into a form with case folded where IMAP ignores it."""
    if isinstance(b[0], list):  # multipart: 1*body subtype [params disp lang loc ...]
        i = 0
        out = []
        while isinstance(b[i], list):
            out.append(norm_body(b[i], ext))
            i += 1
        out.append(low(b[i]))
        rest = b[i + 1:]
        if rest:
            out.append(norm_params(rest[0]))
            if len(rest) > 1:
                out.append(norm_disp(rest[1]))
            out += [norm_env(x) for x in rest[2:]]
        return out
    t, st = low(b[0]), low(b[1])
    out = [t, st, norm_params(b[2]), s(b[3]), s(b[4]), low(b[5]), s(b[6])]
    i = 7
    if t == "message" and st == "rfc822":
        out += [norm_env(b[7]), norm_body(b[8], ext), s(b[9])]
        i = 10
    elif t == "text":
        out.append(s(b[7]))
        i = 8
    rest = b[i:]
    if rest:
        out.append(s(rest[0]))  # md5
        if len(rest) > 1:
            out.append(norm_disp(rest[1]))
        out += [norm_env(x) for x in rest[2:]]
    return out


def diff(a, b, path=()):
    """The leaves where two normalised trees differ: {path: (a, b)}."""
    if isinstance(a, list) and isinstance(b, list):
        out = {}
        for i in range(max(len(a), len(b))):
            x = a[i] if i < len(a) else "<missing>"
            y = b[i] if i < len(b) else "<missing>"
            out.update(diff(x, y, path + (i,)))
        return out
    return {} if a == b else {path: (a, b)}


# ---- the test -------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def baseline():
    """Replaces the suite's baseline fixture: this test needs no Postern stack."""
    yield


@pytest.fixture(scope="module")
def dovecot():
    if not dovecot_available():
        pytest.skip("dovecot-imapd is not installed (sh deploy/deps.sh installs it)")
    d = Dovecot(user="mimediff", password="mimediff-pw-1")
    d.start()
    yield d
    d.stop()


@pytest.fixture(scope="module")
def dovecot_answers(dovecot):
    """{file: {item: tree}} for every corpus file, appended and fetched once."""
    answers = {}
    uids = {f: dovecot.append(open(os.path.join(CORPUS, f), "rb").read()) for f in FILES}
    with dovecot.connect() as imap:
        for f, uid in uids.items():
            typ, data = imap.uid("FETCH", str(uid), "(ENVELOPE BODYSTRUCTURE BODY)")
            assert typ == "OK", data
            answers[f] = parse_fetch(data)
    return answers


def mime_dump(path):
    if not os.access(MIME_DUMP, os.X_OK):
        pytest.fail("%s is missing: build first (make)" % MIME_DUMP)
    out = subprocess.run([MIME_DUMP, path], check=True, capture_output=True, timeout=30).stdout
    # Three values, one after the other; literals may hold line breaks.
    items = {}
    rest = out
    for name in ("ENVELOPE", "BODYSTRUCTURE", "BODY"):
        value, rest = parse_sexp(rest)
        rest = rest.lstrip(b"\n")
        items[name] = value
    assert rest == b"", "mime_dump printed more than three values: %r" % rest[:80]
    return items


def normalise(name, tree):
    if name == "ENVELOPE":
        return norm_env(tree)
    return norm_body(tree, name == "BODYSTRUCTURE")


def test_corpus_is_real_world_sized():
    assert 15 <= len(FILES) <= 25
    lf = [f for f in FILES if b"\r\n" not in open(os.path.join(CORPUS, f), "rb").read()]
    assert 1 <= len(lf) < len(FILES) / 2, lf


def test_sexp_parser():
    assert parse_one(b'("a" NIL 12 ("b\\"c") {3}\r\nx\r\n)') == [b"a", None, "12", [b'b"c'], b"x\r\n"]
    with pytest.raises(ValueError):
        parse_one(b'("a"')


@pytest.mark.parametrize("name", FILES)
def test_same_as_dovecot(name, dovecot_answers):
    ours = mime_dump(os.path.join(CORPUS, name))
    theirs = dovecot_answers[name]
    expected = EXPECTED_DIFFERENCES.get(name, {})
    problems = []
    for item in ("ENVELOPE", "BODYSTRUCTURE", "BODY"):
        d = diff(normalise(item, ours[item]), normalise(item, theirs[item]))
        want = expected.get(item, (None, {}))[1]
        if d != want:
            problems.append("%s differs from Dovecot:\n  ours:    %r\n  dovecot: %r\n  "
                            "leaves (ours, dovecot): %r\n  expected: %r"
                            % (item, ours[item], theirs[item], d, want))
    assert not problems, "\n".join(problems)


# ---- BODY[section]: where mail_section says each part lies --------------------------------

def section_paths(b, prefix=()):
    """Part numbers ("1", "2.1", ...) of a parsed BODYSTRUCTURE and the sections to fetch."""
    out = []
    if isinstance(b[0], list):
        i = 0
        while isinstance(b[i], list):
            out += part_sections(b[i], prefix + (i + 1,))
            i += 1
    else:
        out += part_sections(b, prefix + (1,), top_single=True)
    return out


def part_sections(b, path, top_single=False):
    name = ".".join(str(x) for x in path)
    out = [name, name + ".MIME"]
    if not isinstance(b[0], list) and low(b[0]) == "message" and low(b[1]) == "rfc822":
        out += [name + ".HEADER", name + ".TEXT", name + ".HEADER.FIELDS (Subject From)"]
        inner = b[8]
        if isinstance(inner[0], list):
            out += section_paths(inner, path)
        else:
            out += part_sections(inner, path + (1,))
    elif isinstance(b[0], list):
        out += section_paths(b, path)
    return out


def dump_sections(path, sections):
    out = subprocess.run([MIME_DUMP, path] + sections, check=True, capture_output=True,
                         timeout=30).stdout
    results = []
    for _ in sections:
        head, out = out.split(b"\n", 1)
        rc, n = (int(x) for x in head.split())
        results.append((rc, out[:n]))
        assert out[n:n + 1] == b"\n"
        out = out[n + 1:]
    return results


def dovecot_section(imap, uid, section):
    typ, data = imap.uid("FETCH", str(uid), "(BODY.PEEK[%s])" % section)
    assert typ == "OK", data
    for x in data:
        if isinstance(x, tuple):
            return x[1]
    # An empty string or NIL is sent without a literal.
    return b""


# file -> {section: reason}: BODY[section] results that are expected to differ from Dovecot's.
EXPECTED_SECTION_DIFFERENCES = {
    "21-header-only-no-blank.eml": {
        "HEADER.FIELDS.NOT (Received Subject)":
            "the header has no blank line after it: RFC 3501 section 6.4.5 says the subset "
            "includes the blank line, and Postern always adds it; Dovecot adds it for "
            "HEADER.FIELDS but not for HEADER.FIELDS.NOT",
    },
}


@pytest.mark.parametrize("name", FILES)
def test_sections_same_as_dovecot(name, dovecot, dovecot_answers):
    path = os.path.join(CORPUS, name)
    raw = open(path, "rb").read()
    bare_lf = b"\r\n" not in raw
    sections = ["", "HEADER", "TEXT", "HEADER.FIELDS (From Subject)",
                "HEADER.FIELDS.NOT (Received Subject)", "9", "9.MIME"]
    sections += section_paths(dovecot_answers[name]["BODYSTRUCTURE"])
    ours = dump_sections(path, sections)
    uid = int(dovecot_answers[name]["UID"])
    problems = []
    with dovecot.connect() as imap:
        for section, (rc, data) in zip(sections, ours):
            assert rc in (0, 1), "mail_section(%r) = %d" % (section, rc)
            if bare_lf:
                # Dovecot hands out CRLF line ends; lib/mail the stored bytes.
                data = re.sub(rb"(?<!\r)\n", b"\r\n", data)
            theirs = dovecot_section(imap, uid, section)
            expected = section in EXPECTED_SECTION_DIFFERENCES.get(name, {})
            if expected and data == theirs:
                problems.append("BODY[%s] is listed as an expected difference but is the same"
                                % section)
            elif data != theirs and not expected:
                problems.append("BODY[%s]:\n  ours:    %r\n  dovecot: %r" % (section, data, theirs))
    assert not problems, "\n".join(problems)
