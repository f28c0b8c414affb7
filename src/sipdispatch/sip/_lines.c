/*
 * sipdispatch.sip._lines: the header lines of a SIP message, cut and looked up in C.
 *
 * Written by hand because no library does this job: it is the loop of codec._parse_headers
 * (the reference, and what runs where this module is not built), without a Python string per
 * line for the lines seen before. A proxy sees the same header lines again and again
 * (Max-Forwards, Contact, Allow, a trunk's To...); each is looked up here by its characters,
 * and only a line not seen before becomes a string and goes to the Python parser.
 *
 * scan(text, start, separator, parse_line) reads text[start:] as header lines cut at
 * separator ("\r\n" or "\n") and returns (items, first, repeated, lines), the parts of
 * message.Headers, exactly as codec._parse_headers would build them; or None when the text is
 * not one byte per character, or holds a folded line: the Python loop takes those.
 * parse_line(line) -> (key, name, value) may raise; the error goes to the caller.
 *
 * measure(head, controls) counts what codec.parse checks in a header section's bytes before
 * it reads it (line ends, commas, control bytes); head_end(data) finds where that section ends;
 * write(...) writes a message's lines back out as bytes.
 *
 * The memo is bounded like sip/memo.py's: at most MEMO_SIZE lines of at most MAX_KEY
 * characters, emptied when full. A line is looked for in at most MAX_PROBES slots, and one that
 * finds no free slot there is not kept: lines a sender made to collide (the hash is keyed with
 * the process's random hash secret, but it is a fast hash, not a cryptographic one) cost at
 * most that many comparisons, and are then parsed as if new.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define MEMO_SIZE 2048
#define MAX_KEY 256
#define SLOTS 4096 /* a power of two, twice MEMO_SIZE: probe chains stay short */
#define MAX_PROBES 8

typedef struct {
    Py_hash_t hash;
    PyObject *line;   /* str, one byte per character; NULL for an empty slot */
    PyObject *header; /* (key, name, value) */
} Entry;

static Entry memo[SLOTS];
static Py_ssize_t memo_count = 0;

static void
memo_clear(void)
{
    for (Py_ssize_t i = 0; i < SLOTS; i++) {
        if (memo[i].line != NULL) {
            Py_CLEAR(memo[i].line);
            Py_CLEAR(memo[i].header);
        }
    }
    memo_count = 0;
}

static uint64_t seed;

/* A line's hash: eight bytes at a time, multiplied and folded, then mixed (the finaliser of
 * MurmurHash3). A few dozen instructions for a line, where CPython's SipHash takes hundreds. */
static Py_hash_t
line_hash(const Py_UCS1 *chars, Py_ssize_t length)
{
    uint64_t h = seed ^ ((uint64_t)length * 0x9E3779B97F4A7C15ULL);
    uint64_t word;
    while (length >= 8) {
        memcpy(&word, chars, 8);
        h = (h ^ word) * 0xBF58476D1CE4E5B9ULL;
        h ^= h >> 31;
        chars += 8;
        length -= 8;
    }
    word = 0;
    memcpy(&word, chars, (size_t)length);
    h = (h ^ word) * 0x94D049BB133111EBULL;
    h ^= h >> 33;
    h *= 0xFF51AFD7ED558CCDULL;
    h ^= h >> 33;
    h *= 0xC4CEB9FE1A85EC53ULL;
    h ^= h >> 33;
    return (Py_hash_t)h;
}

/* The slot holding this line, or the empty slot where it would go; NULL when neither is
 * within MAX_PROBES slots. */
static Entry *
memo_slot(const Py_UCS1 *chars, Py_ssize_t length, Py_hash_t hash)
{
    size_t i = (size_t)hash & (SLOTS - 1);
    for (int probe = 0; probe < MAX_PROBES; probe++) {
        Entry *entry = &memo[i];
        if (entry->line == NULL) {
            return entry;
        }
        if (entry->hash == hash && PyUnicode_GET_LENGTH(entry->line) == length
            && memcmp(PyUnicode_1BYTE_DATA(entry->line), chars, (size_t)length) == 0) {
            return entry;
        }
        i = (i + 1) & (SLOTS - 1);
    }
    return NULL;
}

/* Add one field to the parts of Headers, the n-th; steals nothing. The lists were sized for
 * every line, so a field is set in place, not appended. */
static int
add_field(PyObject *items, PyObject *first, PyObject *repeated, PyObject *lines, Py_ssize_t n,
          PyObject *header, PyObject *line)
{
    PyObject *key = PyTuple_GET_ITEM(header, 0);
    PyList_SET_ITEM(items, n, Py_NewRef(header));
    PyList_SET_ITEM(lines, n, Py_NewRef(line));
    /* one look-up: the key's first value goes in unless the key is there already */
    Py_ssize_t before = PyDict_GET_SIZE(first);
    if (PyDict_SetDefault(first, key, PyTuple_GET_ITEM(header, 2)) == NULL) {
        return -1;
    }
    if (PyDict_GET_SIZE(first) == before) {
        return PySet_Add(repeated, key);
    }
    return 0;
}

/* Header names met already, by what precedes the colon: (key, name as written). A name is
 * checked against the grammar, and its key found, by the Python parser the first time. */
#define NAMES 1024
#define MAX_NAMES 512
#define MAX_NAME 64

typedef struct {
    Py_hash_t hash;
    Py_ssize_t length;
    Py_UCS1 raw[MAX_NAME];
    PyObject *key;
    PyObject *name;
} Name;

static Name names[NAMES];
static Py_ssize_t names_count = 0;

static Name *
name_slot(const Py_UCS1 *chars, Py_ssize_t length, Py_hash_t hash)
{
    size_t i = (size_t)hash & (NAMES - 1);
    for (int probe = 0; probe < MAX_PROBES; probe++) {
        Name *entry = &names[i];
        if (entry->key == NULL) {
            return entry;
        }
        if (entry->hash == hash && entry->length == length
            && memcmp(entry->raw, chars, (size_t)length) == 0) {
            return entry;
        }
        i = (i + 1) & (NAMES - 1);
    }
    return NULL;
}

static int
is_blank(Py_UCS1 c)
{
    return c == ' ' || c == '\t';
}

/* The (key, name, value) of a line not seen before: cut here when its name is known, else
 * by the Python parser (which checks the name, and raises for a line without one). */
static PyObject *
parse_new(PyObject *parse_line, PyObject *text, const Py_UCS1 *chars, Py_ssize_t at,
          Py_ssize_t end, PyObject *line)
{
    const Py_UCS1 *colon = memchr(chars + at, ':', (size_t)(end - at));
    Name *known = NULL;
    Py_ssize_t name_length = colon == NULL ? 0 : colon - (chars + at);
    Py_hash_t hash = 0;
    if (name_length > 0 && name_length <= MAX_NAME) {
        hash = line_hash(chars + at, name_length);
        known = name_slot(chars + at, name_length, hash);
        if (known != NULL && known->key != NULL) {
            Py_ssize_t from = colon - chars + 1;
            Py_ssize_t to = end;
            while (from < to && is_blank(chars[from])) {
                from++;
            }
            while (to > from && is_blank(chars[to - 1])) {
                to--;
            }
            PyObject *value = PyUnicode_Substring(text, from, to);
            if (value == NULL) {
                return NULL;
            }
            PyObject *header = PyTuple_Pack(3, known->key, known->name, value);
            Py_DECREF(value);
            return header;
        }
    }
    PyObject *header = PyObject_CallOneArg(parse_line, line);
    if (header == NULL) {
        return NULL;
    }
    if (!PyTuple_CheckExact(header) || PyTuple_GET_SIZE(header) != 3
        || !PyUnicode_CheckExact(PyTuple_GET_ITEM(header, 0))
        || !PyUnicode_CheckExact(PyTuple_GET_ITEM(header, 2))) {
        Py_DECREF(header);
        PyErr_SetString(PyExc_TypeError, "parse_line must return (key, name, value) strings");
        return NULL;
    }
    /* parse_line ran Python code, which may have let another thread change the table */
    known = name_length > 0 && name_length <= MAX_NAME
                ? name_slot(chars + at, name_length, hash) : NULL;
    if (known != NULL && known->key == NULL && names_count < MAX_NAMES) {
        known->hash = hash;
        known->length = name_length;
        memcpy(known->raw, chars + at, (size_t)name_length);
        known->key = Py_NewRef(PyTuple_GET_ITEM(header, 0));
        known->name = Py_NewRef(PyTuple_GET_ITEM(header, 1));
        names_count += 1;
    }
    return header;
}

static PyObject *
scan(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 || !PyUnicode_CheckExact(args[0]) || !PyLong_CheckExact(args[1])
        || !PyUnicode_CheckExact(args[2])) {
        PyErr_SetString(PyExc_TypeError, "scan(text: str, start: int, separator: str, parse_line)");
        return NULL;
    }
    (void)module;
    PyObject *text = args[0];
    PyObject *parse_line = args[3];
    if (PyUnicode_READY(text) < 0 || PyUnicode_READY(args[2]) < 0) {
        return NULL;
    }
    if (PyUnicode_KIND(text) != PyUnicode_1BYTE_KIND) {
        Py_RETURN_NONE;
    }
    Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    if (start == -1 && PyErr_Occurred()) {
        return NULL;
    }
    Py_ssize_t size = PyUnicode_GET_LENGTH(text);
    Py_ssize_t sep_length = PyUnicode_GET_LENGTH(args[2]);
    if (start < 0 || start > size || PyUnicode_KIND(args[2]) != PyUnicode_1BYTE_KIND
        || sep_length < 1 || sep_length > 2) {
        PyErr_SetString(PyExc_ValueError, "scan: bad start or separator");
        return NULL;
    }
    const Py_UCS1 *chars = PyUnicode_1BYTE_DATA(text);
    const Py_UCS1 *separator = PyUnicode_1BYTE_DATA(args[2]);

    /* at most one line per separator's first character, and one after the last */
    Py_ssize_t capacity = 1;
    for (const Py_UCS1 *p = chars + start;
         (p = memchr(p, separator[0], (size_t)(chars + size - p))) != NULL; p++) {
        capacity++;
    }
    Py_ssize_t n = 0; /* fields set */
    PyObject *items = PyList_New(capacity);
    PyObject *first = _PyDict_NewPresized(capacity);
    PyObject *repeated = PySet_New(NULL);
    PyObject *lines = PyList_New(capacity);
    if (items == NULL || first == NULL || repeated == NULL || lines == NULL) {
        goto fail;
    }
    Py_ssize_t at = start;
    while (at <= size) {
        /* This line ends at the next separator, or at the end of the text. */
        Py_ssize_t end = at;
        for (;;) {
            const Py_UCS1 *found = memchr(chars + end, separator[0], (size_t)(size - end));
            if (found == NULL) {
                end = size;
                break;
            }
            end = found - chars;
            if (sep_length == 1 || (end + 1 < size && chars[end + 1] == separator[1])) {
                break;
            }
            end += 1; /* a CR alone inside a line: part of it, as str.split sees it */
        }
        Py_ssize_t length = end - at;
        const Py_UCS1 *line_chars = chars + at;
        at = end + sep_length;
        if (length == 0) {
            continue;
        }
        if (line_chars[0] == ' ' || line_chars[0] == '\t') {
            /* a folded line: rare, and the Python loop joins it */
            Py_DECREF(items);
            Py_DECREF(first);
            Py_DECREF(repeated);
            Py_DECREF(lines);
            Py_RETURN_NONE;
        }
        int rc;
        Entry *entry = NULL;
        Py_hash_t hash = 0;
        if (length <= MAX_KEY) {
            hash = line_hash(line_chars, length);
            entry = memo_slot(line_chars, length, hash);
        }
        if (entry != NULL && entry->line != NULL) {
            rc = add_field(items, first, repeated, lines, n, entry->header, entry->line);
        } else {
            PyObject *line = PyUnicode_Substring(text, line_chars - chars, end);
            if (line == NULL) {
                goto fail;
            }
            PyObject *header = parse_new(parse_line, text, chars, line_chars - chars, end, line);
            if (header == NULL) {
                Py_DECREF(line);
                goto fail;
            }
            rc = add_field(items, first, repeated, lines, n, header, line);
            if (entry != NULL) {
                if (memo_count >= MEMO_SIZE) {
                    memo_clear();
                }
                /* looked for again: parse_line ran Python code, which may have let another
                 * thread change the memo */
                entry = memo_slot(line_chars, length, hash);
            }
            if (entry != NULL && entry->line == NULL) {
                entry->hash = hash; /* the memo takes both references */
                entry->line = line;
                entry->header = header;
                memo_count += 1;
            } else {
                Py_DECREF(header);
                Py_DECREF(line);
            }
        }
        if (rc < 0) {
            goto fail;
        }
        n++;
    }
    /* the slots of the lines that were not fields (empty ones) were never set */
    Py_SET_SIZE(items, n);
    Py_SET_SIZE(lines, n);
    PyObject *result = PyTuple_Pack(4, items, first, repeated, lines);
    Py_DECREF(items);
    Py_DECREF(first);
    Py_DECREF(repeated);
    Py_DECREF(lines);
    return result;

fail:
    Py_XDECREF(items);
    Py_XDECREF(first);
    Py_XDECREF(repeated);
    Py_XDECREF(lines);
    return NULL;
}

/* Eight bytes at a time: the high bit of each byte of the result is set where the byte of x
 * is below 0x20, or is 0 (exact: no carry crosses a byte, as (b & 0x7f) + 0x60 < 0x100). */
#define HIGH_BITS 0x8080808080808080ULL
#define LOW_BITS 0x7F7F7F7F7F7F7F7FULL
#define EVERY_BYTE(b) (0x0101010101010101ULL * (b))

static uint64_t
below_space(uint64_t x)
{
    return ~(((x & LOW_BITS) + EVERY_BYTE(0x60)) | x) & HIGH_BITS;
}

static uint64_t
zero_bytes(uint64_t x)
{
    return ~(((x & LOW_BITS) + LOW_BITS) | x | LOW_BITS);
}

/* measure(head, controls) -> (crlf, separators, commas, control_bytes), what codec.parse
 * checks before it reads a header section, in C passes over its bytes: whether "\r\n"
 * occurs, how many line ends there are ("\r\n" where it occurs, else "\n"), how many commas,
 * and, when asked (else 0), how many control bytes: grammar.CONTROL_BYTES, CTL but HTAB
 * (tests/e2e/lines_agreement.py checks both sets agree). What the Python code counts with
 * three str.count and a bytes.translate. */
static PyObject *
measure(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2 || !PyBytes_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "measure(head: bytes, controls: bool)");
        return NULL;
    }
    int count_controls = PyObject_IsTrue(args[1]);
    if (count_controls < 0) {
        return NULL;
    }
    const unsigned char *bytes = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    Py_ssize_t size = PyBytes_GET_SIZE(args[0]);
    const unsigned char *end = bytes + size;
    Py_ssize_t lfs = 0, crlfs = 0, commas = 0, controls = 0;
    for (const unsigned char *p = bytes; (p = memchr(p, '\n', (size_t)(end - p))) != NULL; p++) {
        lfs++;
        crlfs += p > bytes && p[-1] == '\r';
    }
    for (const unsigned char *p = bytes; (p = memchr(p, ',', (size_t)(end - p))) != NULL; p++) {
        commas++;
    }
    if (count_controls) {
        /* most words hold no control byte at all; the others are counted byte by byte */
        Py_ssize_t i = 0;
        for (; i + 8 <= size; i += 8) {
            uint64_t word;
            memcpy(&word, bytes + i, 8);
            if ((below_space(word) | zero_bytes(word ^ EVERY_BYTE(0x7F))) == 0) {
                continue;
            }
            for (int j = 0; j < 8; j++) {
                unsigned char c = bytes[i + j];
                controls += (c < 0x20 && c != '\t') || c == 0x7F;
            }
        }
        for (; i < size; i++) {
            unsigned char c = bytes[i];
            controls += (c < 0x20 && c != '\t') || c == 0x7F;
        }
    }
    /* built by hand: Py_BuildValue would read its format string on every message */
    PyObject *counts[3] = {PyLong_FromSsize_t(crlfs > 0 ? crlfs : lfs),
                           PyLong_FromSsize_t(commas), PyLong_FromSsize_t(controls)};
    PyObject *result = PyTuple_New(4);
    if (result == NULL || counts[0] == NULL || counts[1] == NULL || counts[2] == NULL) {
        Py_XDECREF(result);
        for (int i = 0; i < 3; i++) {
            Py_XDECREF(counts[i]);
        }
        return NULL;
    }
    PyTuple_SET_ITEM(result, 0, PyBool_FromLong(crlfs > 0));
    for (int i = 0; i < 3; i++) {
        PyTuple_SET_ITEM(result, i + 1, counts[i]);
    }
    return result;
}

/* an exact str of ASCII characters: its characters are its bytes */
static int
is_ascii(PyObject *text)
{
    return PyUnicode_CheckExact(text) && PyUnicode_IS_ASCII(text);
}

static char *
put(char *into, PyObject *ascii)
{
    Py_ssize_t size = PyUnicode_GET_LENGTH(ascii);
    memcpy(into, PyUnicode_1BYTE_DATA(ascii), (size_t)size);
    return into + size;
}

static char *
put_chars(char *into, const char *chars, size_t size)
{
    memcpy(into, chars, size);
    return into + size;
}

/* whether a field's key (a str) is "content-length" */
static int
is_content_length(PyObject *key)
{
    static const char content_length[] = "content-length";
    return PyUnicode_IS_ASCII(key) && PyUnicode_GET_LENGTH(key) == sizeof content_length - 1
           && memcmp(PyUnicode_1BYTE_DATA(key), content_length, sizeof content_length - 1) == 0;
}

/* write(start_line, items, lines, content_length, body) -> the message's bytes, or None:
 * what message.Headers._encoded makes (start line, each field as the line it came in or as
 * "name: value", one Content-Length: content_length where the first was or at the end, the
 * blank line, body) without a list of lines and a str in between. None when a part is not
 * ASCII text (its UTF-8, surrogates and all, is the Python code's) or not of the expected
 * shape (the Python code then raises what it raises). */
static PyObject *
write_message(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 5 || !PyList_CheckExact(args[1]) || !PyList_CheckExact(args[2])
        || !PyBytes_CheckExact(args[4])) {
        PyErr_SetString(PyExc_TypeError,
                        "write(start_line: str, items: list, lines: list, content_length: str, "
                        "body: bytes)");
        return NULL;
    }
    PyObject *start = args[0], *items = args[1], *lines = args[2], *length = args[3];
    PyObject *body = args[4];
    Py_ssize_t count = PyList_GET_SIZE(items);
    if (!is_ascii(start) || !is_ascii(length) || PyList_GET_SIZE(lines) < count) {
        Py_RETURN_NONE;
    }
    static const char default_name[] = "Content-Length";
    Py_ssize_t length_size = PyUnicode_GET_LENGTH(length);
    /* first the size, and whether every part is as expected */
    Py_ssize_t total = PyUnicode_GET_LENGTH(start) + 2;
    int has_length = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PyList_GET_ITEM(items, i);
        if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 3) {
            Py_RETURN_NONE;
        }
        PyObject *key = PyTuple_GET_ITEM(item, 0), *name = PyTuple_GET_ITEM(item, 1);
        PyObject *value = PyTuple_GET_ITEM(item, 2), *line = PyList_GET_ITEM(lines, i);
        if (!PyUnicode_CheckExact(key)) {
            Py_RETURN_NONE;
        }
        if (is_content_length(key)) {
            if (!has_length) {
                has_length = 1;
                if (!is_ascii(name)) {
                    Py_RETURN_NONE;
                }
                total += PyUnicode_GET_LENGTH(name) + 2 + length_size + 2;
            }
            continue;
        }
        if (line == Py_None) {
            if (!is_ascii(name) || !is_ascii(value)) {
                Py_RETURN_NONE;
            }
            total += PyUnicode_GET_LENGTH(name) + 2 + PyUnicode_GET_LENGTH(value) + 2;
        } else {
            if (!is_ascii(line)) {
                Py_RETURN_NONE;
            }
            total += PyUnicode_GET_LENGTH(line) + 2;
        }
    }
    if (!has_length) {
        total += (Py_ssize_t)(sizeof default_name - 1) + 2 + length_size + 2;
    }
    total += 2 + PyBytes_GET_SIZE(body);
    PyObject *data = PyBytes_FromStringAndSize(NULL, total);
    if (data == NULL) {
        return NULL;
    }
    /* then the bytes: nothing above can have changed, no Python code ran */
    char *into = put(PyBytes_AS_STRING(data), start);
    into = put_chars(into, "\r\n", 2);
    has_length = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PyList_GET_ITEM(items, i);
        PyObject *key = PyTuple_GET_ITEM(item, 0), *name = PyTuple_GET_ITEM(item, 1);
        PyObject *line = PyList_GET_ITEM(lines, i);
        if (is_content_length(key)) {
            if (!has_length) {
                has_length = 1;
                into = put(into, name);
                into = put_chars(into, ": ", 2);
                into = put(into, length);
                into = put_chars(into, "\r\n", 2);
            }
            continue;
        }
        if (line == Py_None) {
            into = put(into, name);
            into = put_chars(into, ": ", 2);
            into = put(into, PyTuple_GET_ITEM(item, 2));
        } else {
            into = put(into, line);
        }
        into = put_chars(into, "\r\n", 2);
    }
    if (!has_length) {
        into = put_chars(into, default_name, sizeof default_name - 1);
        into = put_chars(into, ": ", 2);
        into = put(into, length);
        into = put_chars(into, "\r\n", 2);
    }
    into = put_chars(into, "\r\n", 2);
    put_chars(into, PyBytes_AS_STRING(body), (size_t)PyBytes_GET_SIZE(body));
    return data;
}

/* head_end(data) -> where the first "\r\n\r\n" of data starts, or -1: data.find(b"\r\n\r\n")
 * (codec._head_end), by memchr from one '\r' to the next: a header section has one a line,
 * and the generic bytes.find costs more than the whole search here. */
static PyObject *
head_end(PyObject *module, PyObject *data)
{
    (void)module;
    if (!PyBytes_CheckExact(data)) {
        PyErr_SetString(PyExc_TypeError, "head_end(data: bytes)");
        return NULL;
    }
    const char *bytes = PyBytes_AS_STRING(data);
    const char *end = bytes + PyBytes_GET_SIZE(data);
    for (const char *p = bytes; end - p >= 4; p++) {
        /* only where three more bytes follow can a "\r\n\r\n" start */
        p = memchr(p, '\r', (size_t)(end - p - 3));
        if (p == NULL) {
            break;
        }
        if (p[1] == '\n' && p[2] == '\r' && p[3] == '\n') {
            return PyLong_FromSsize_t(p - bytes);
        }
    }
    return PyLong_FromLong(-1);
}

static PyObject *
clear(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    memo_clear();
    Py_RETURN_NONE;
}

static PyObject *
size(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    return PyLong_FromSsize_t(memo_count);
}

static PyMethodDef methods[] = {
    {"scan", (PyCFunction)(void (*)(void))scan, METH_FASTCALL,
     "scan(text, start, separator, parse_line) -> (items, first, repeated, lines) or None"},
    {"measure", (PyCFunction)(void (*)(void))measure, METH_FASTCALL,
     "measure(head, controls) -> (crlf, separators, commas, control_bytes)"},
    {"write", (PyCFunction)(void (*)(void))write_message, METH_FASTCALL,
     "write(start_line, items, lines, content_length, body) -> bytes or None"},
    {"head_end", head_end, METH_O, "head_end(data) -> index of the first CRLFCRLF, or -1"},
    {"clear", clear, METH_NOARGS, "Empty the memo of lines."},
    {"size", size, METH_NOARGS, "How many lines the memo holds."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_lines",
    .m_doc = "Header lines of a SIP message, cut and looked up in C.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__lines(void)
{
    /* keyed by the process's hash secret (random unless PYTHONHASHSEED says otherwise) */
    memcpy(&seed, _Py_HashSecret.uc, sizeof(seed));
    return PyModule_Create(&module_def);
}
