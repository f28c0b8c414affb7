/*
 * sipdispatch.sip._tokens: the parameters of a Via, read in C.
 *
 * Written by hand because no library does this job: it is values._token_params (the
 * reference, and what runs where this module is not built), for the parameters every
 * message's top Via carries (";branch=z9hG4bK...;rport"), without a regex match, a list, a
 * tuple and a lowered copy per parameter.
 *
 * params(text) reads text as *( ";" token [ "=" token ] ) (grammar.VIA_PARAMS) and returns
 * {name lowered: value} (a parameter without a value maps to "", a later one of the same
 * name wins), or None when text is not of that form: the general Via parser takes those
 * (quoted values, blanks, IPv6 received=...).
 *
 * compared_via(text) is values._via_compared_form for ASCII text: a Via value as RFC 3261
 * 20.42 compares it (sent-protocol and sent-by without blanks, upper-cased; parameters with
 * lowered names and stripped values, sorted), or None for text with other characters or too
 * many parameters, which the reference then takes. It runs on every forwarded request and
 * relayed response (branch signatures cover it).
 *
 * tests/e2e/lines_agreement.py checks both against their references.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~"),
 * grammar.TOKEN_CHARS; filled in by the module's init */
static char is_token[256];

static PyObject *
params(PyObject *module, PyObject *text)
{
    (void)module;
    if (!PyUnicode_CheckExact(text)) {
        PyErr_SetString(PyExc_TypeError, "params(text: str)");
        return NULL;
    }
    if (PyUnicode_READY(text) < 0) {
        return NULL;
    }
    if (PyUnicode_KIND(text) != PyUnicode_1BYTE_KIND) {
        Py_RETURN_NONE; /* a character over one byte is no token character */
    }
    const Py_UCS1 *chars = PyUnicode_1BYTE_DATA(text);
    Py_ssize_t size = PyUnicode_GET_LENGTH(text);
    PyObject *result = PyDict_New();
    if (result == NULL) {
        return NULL;
    }
    Py_ssize_t i = 0;
    while (i < size) {
        if (chars[i] != ';') {
            goto not_tokens;
        }
        Py_ssize_t name_start = ++i;
        int upper = 0;
        while (i < size && is_token[chars[i]]) {
            upper |= chars[i] >= 'A' && chars[i] <= 'Z';
            i++;
        }
        Py_ssize_t name_end = i;
        if (name_end == name_start) {
            goto not_tokens;
        }
        Py_ssize_t value_start = i, value_end = i;
        if (i < size && chars[i] == '=') {
            value_start = ++i;
            while (i < size && is_token[chars[i]]) {
                i++;
            }
            value_end = i;
            if (value_end == value_start) {
                goto not_tokens;
            }
        }
        PyObject *name;
        if (upper) {
            name = PyUnicode_New(name_end - name_start, 127);
            if (name == NULL) {
                goto fail;
            }
            Py_UCS1 *lowered = PyUnicode_1BYTE_DATA(name);
            for (Py_ssize_t j = name_start; j < name_end; j++) {
                Py_UCS1 c = chars[j];
                lowered[j - name_start] = (c >= 'A' && c <= 'Z') ? (Py_UCS1)(c + 32) : c;
            }
        } else {
            name = PyUnicode_Substring(text, name_start, name_end);
            if (name == NULL) {
                goto fail;
            }
        }
        PyObject *value = PyUnicode_Substring(text, value_start, value_end);
        if (value == NULL) {
            Py_DECREF(name);
            goto fail;
        }
        int rc = PyDict_SetItem(result, name, value);
        Py_DECREF(name);
        Py_DECREF(value);
        if (rc < 0) {
            goto fail;
        }
    }
    return result;

not_tokens:
    Py_DECREF(result);
    Py_RETURN_NONE;
fail:
    Py_DECREF(result);
    return NULL;
}

/* str.split() and str.strip() without arguments: these are the ASCII blanks they cut */
static int
is_blank(Py_UCS1 c)
{
    return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f);
}

/* chars[*a:*b] without the blanks at either end, as str.strip() */
static void
strip(const Py_UCS1 *chars, Py_ssize_t *a, Py_ssize_t *b)
{
    while (*a < *b && is_blank(chars[*a])) {
        (*a)++;
    }
    while (*b > *a && is_blank(chars[*b - 1])) {
        (*b)--;
    }
}

typedef struct {
    const Py_UCS1 *start;
    Py_ssize_t size;
} span;

/* str's order: byte by byte, a prefix first */
static int
span_order(const void *left, const void *right)
{
    const span *a = left, *b = right;
    int order = memcmp(a->start, b->start, (size_t)(a->size < b->size ? a->size : b->size));
    if (order != 0) {
        return order;
    }
    return (a->size > b->size) - (a->size < b->size);
}

#define MAX_COMPARED_PARAMS 64

static PyObject *
compared_via(PyObject *module, PyObject *text)
{
    (void)module;
    if (!PyUnicode_CheckExact(text)) {
        PyErr_SetString(PyExc_TypeError, "compared_via(text: str)");
        return NULL;
    }
    if (PyUnicode_READY(text) < 0) {
        return NULL;
    }
    if (!PyUnicode_IS_ASCII(text)) {
        Py_RETURN_NONE; /* Unicode blanks and cases: the reference's */
    }
    const Py_UCS1 *chars = PyUnicode_1BYTE_DATA(text);
    Py_ssize_t size = PyUnicode_GET_LENGTH(text);
    /* The form is never longer than the text: blanks go, nothing is added. Parameters are
     * written to scratch first, then sorted into place. */
    Py_UCS1 *scratch = PyMem_Malloc((size_t)size + 1);
    if (scratch == NULL) {
        return PyErr_NoMemory();
    }
    span parts[MAX_COMPARED_PARAMS];
    int count = 0;
    Py_ssize_t i = 0, length = 0;
    Py_UCS1 *out = scratch;
    for (; i < size && chars[i] != ';'; i++) {
        Py_UCS1 c = chars[i];
        if (!is_blank(c)) {
            out[length++] = (c >= 'a' && c <= 'z') ? (Py_UCS1)(c - 32) : c;
        }
    }
    Py_ssize_t sent = length;
    int has_params = i < size && i + 1 < size; /* "x;" has an empty rest: no parameters */
    if (has_params) {
        i++;
        while (1) {
            Py_ssize_t end = i;
            while (end < size && chars[end] != ';') {
                end++;
            }
            if (count == MAX_COMPARED_PARAMS) {
                PyMem_Free(scratch);
                Py_RETURN_NONE;
            }
            Py_ssize_t equals = i;
            while (equals < end && chars[equals] != '=') {
                equals++;
            }
            Py_UCS1 *param = out + length;
            Py_ssize_t at = 0;
            Py_ssize_t a = i, b = equals; /* the name, stripped and lowered */
            strip(chars, &a, &b);
            for (; a < b; a++) {
                Py_UCS1 c = chars[a];
                param[at++] = (c >= 'A' && c <= 'Z') ? (Py_UCS1)(c + 32) : c;
            }
            if (equals < end) {
                param[at++] = '=';
                a = equals + 1, b = end; /* the value, stripped */
                strip(chars, &a, &b);
                memcpy(param + at, chars + a, (size_t)(b - a));
                at += b - a;
            }
            parts[count].start = param;
            parts[count].size = at;
            count++;
            length += at;
            if (end >= size) {
                break;
            }
            i = end + 1;
        }
        qsort(parts, (size_t)count, sizeof(span), span_order);
    }
    PyObject *form = PyUnicode_New(has_params ? length + count : length, 127);
    if (form == NULL) {
        PyMem_Free(scratch);
        return NULL;
    }
    Py_UCS1 *into = PyUnicode_1BYTE_DATA(form);
    memcpy(into, scratch, (size_t)sent);
    into += sent;
    for (int k = 0; k < count; k++) {
        *into++ = ';';
        memcpy(into, parts[k].start, (size_t)parts[k].size);
        into += parts[k].size;
    }
    PyMem_Free(scratch);
    return form;
}

static PyMethodDef methods[] = {
    {"params", params, METH_O, "params(text) -> {name: value} or None"},
    {"compared_via", compared_via, METH_O, "compared_via(text) -> str or None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_tokens",
    .m_doc = "The token parameters of a Via, and its compared form, in C.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__tokens(void)
{
    for (int c = 0; c < 256; c++) {
        is_token[c] = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')
                      || (c != 0 && strchr("-.!%*_+`'~", c) != NULL);
    }
    return PyModule_Create(&module_def);
}
