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
 * (quoted values, blanks, IPv6 received=...). tests/e2e/lines_agreement.py checks it against
 * the reference.
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

static PyMethodDef methods[] = {
    {"params", params, METH_O, "params(text) -> {name: value} or None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_tokens",
    .m_doc = "The token parameters of a Via, read in C.",
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
