/*
 * sipdispatch.proxy.transport._datagrams: UDP datagrams in and out by the batch, in C.
 *
 * Written by hand because no library does this job: Python's socket module and the event
 * loops receive and send one datagram per call, each turning a socket address into a
 * (host, port) tuple or back (inet_ntop, inet_pton, a new string) and crossing into the
 * kernel once. A SIP proxy sees the same few peers in every message, and under load finds
 * several datagrams waiting at each wake-up.
 *
 * receive(fd) reads up to BATCH datagrams waiting on the non-blocking UDP socket fd with one
 * recvmmsg(2) and returns [(data, (host, port)), ...], empty when none waits. Source
 * addresses are remembered (a bounded map from the raw address to its tuple).
 *
 * send(fd, items) sends [(data, (host, port)), ...] with sendmmsg(2), BATCH at a time, and
 * returns how many it is done with: all of them, or fewer when the kernel would block (its
 * send buffer full: the caller decides what to do with the rest). A datagram the kernel
 * refuses for good (an address of the other family, an unreachable network) or whose host
 * is not a numeric address is skipped and counted as done, as a lost datagram would be.
 * Destination addresses are remembered alike.
 *
 * The pure Python build, and every build's TCP and TLS, use the event loop's transports.
 */
#define _GNU_SOURCE /* recvmmsg, sendmmsg */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#define BATCH 16 /* a batch's sends wait for it to be handled: a short one bounds the wait */
#define DATAGRAM 65536 /* more than any UDP payload */
#define REMEMBERED 4096 /* addresses per map before it is emptied (they come from the net) */

static char buffers[BATCH][DATAGRAM];
static struct mmsghdr headers[BATCH];
static struct iovec vectors[BATCH];
static struct sockaddr_storage names[BATCH];

static PyObject *sources;      /* raw source address (int or bytes) -> (host, port) */
static PyObject *destinations; /* (host, port) -> raw socket address (bytes) */

static int
remember(PyObject *map, PyObject *key, PyObject *value)
{
    if (PyDict_GET_SIZE(map) >= REMEMBERED) {
        PyDict_Clear(map);
    }
    return PyDict_SetItem(map, key, value);
}

/* The key a source address is remembered by (a new reference): an int for IPv4, the
 * address, port and scope bytes for IPv6 */
static PyObject *
source_key(const struct sockaddr_storage *name)
{
    if (name->ss_family == AF_INET) {
        const struct sockaddr_in *in4 = (const struct sockaddr_in *)name;
        return PyLong_FromUnsignedLongLong(
            ((unsigned long long)in4->sin_addr.s_addr << 16) | in4->sin_port);
    }
    if (name->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)name;
        char raw[16 + 2 + 4];
        memcpy(raw, &in6->sin6_addr, 16);
        memcpy(raw + 16, &in6->sin6_port, 2);
        memcpy(raw + 18, &in6->sin6_scope_id, 4);
        return PyBytes_FromStringAndSize(raw, sizeof(raw));
    }
    PyErr_SetString(PyExc_OSError, "datagram from an address that is not IPv4 or IPv6");
    return NULL;
}

/* (host, port) of a received datagram's source, from the map or made and remembered */
static PyObject *
source_of(const struct sockaddr_storage *name)
{
    PyObject *key = source_key(name);
    if (key == NULL) {
        return NULL;
    }
    PyObject *known = PyDict_GetItemWithError(sources, key);
    if (known != NULL || PyErr_Occurred()) {
        Py_DECREF(key);
        Py_XINCREF(known);
        return known;
    }
    char host[INET6_ADDRSTRLEN];
    int port;
    if (name->ss_family == AF_INET) {
        const struct sockaddr_in *in4 = (const struct sockaddr_in *)name;
        inet_ntop(AF_INET, &in4->sin_addr, host, sizeof(host));
        port = ntohs(in4->sin_port);
    } else { /* AF_INET6: source_key took no other family */
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)name;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        port = ntohs(in6->sin6_port);
    }
    PyObject *address = Py_BuildValue("(si)", host, port);
    if (address == NULL || remember(sources, key, address) < 0) {
        Py_DECREF(key);
        Py_XDECREF(address);
        return NULL;
    }
    Py_DECREF(key);
    return address;
}

static PyObject *
receive_batch(PyObject *module, PyObject *arg)
{
    (void)module;
    int fd = (int)PyLong_AsLong(arg);
    if (fd == -1 && PyErr_Occurred()) {
        return NULL;
    }
    for (int i = 0; i < BATCH; i++) {
        vectors[i].iov_base = buffers[i];
        vectors[i].iov_len = DATAGRAM;
        memset(&headers[i].msg_hdr, 0, sizeof(struct msghdr));
        headers[i].msg_hdr.msg_name = &names[i];
        headers[i].msg_hdr.msg_namelen = sizeof(names[i]);
        headers[i].msg_hdr.msg_iov = &vectors[i];
        headers[i].msg_hdr.msg_iovlen = 1;
    }
    int count;
    do {
        count = recvmmsg(fd, headers, BATCH, MSG_DONTWAIT, NULL);
    } while (count < 0 && errno == EINTR);
    if (count < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return PyList_New(0);
        }
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    PyObject *received = PyList_New(count);
    if (received == NULL) {
        return NULL;
    }
    for (int i = 0; i < count; i++) {
        PyObject *data = PyBytes_FromStringAndSize(buffers[i], headers[i].msg_len);
        PyObject *source = data == NULL ? NULL : source_of(&names[i]);
        PyObject *item = source == NULL ? NULL : PyTuple_Pack(2, data, source);
        Py_XDECREF(data);
        Py_XDECREF(source);
        if (item == NULL) {
            Py_DECREF(received);
            return NULL;
        }
        PyList_SET_ITEM(received, i, item);
    }
    return received;
}

/* The raw socket address of (host, port), a new reference, from the map or made and
 * remembered; Py_None (new reference) for a host that is not a numeric address; NULL with an
 * exception for what is not (str, int) at all. */
static PyObject *
destination_of(PyObject *address)
{
    PyObject *known = PyDict_GetItemWithError(destinations, address);
    if (known != NULL) {
        Py_INCREF(known);
        return known;
    }
    if (PyErr_Occurred()) {
        return NULL;
    }
    if (!PyTuple_Check(address) || PyTuple_GET_SIZE(address) != 2 ||
        !PyUnicode_Check(PyTuple_GET_ITEM(address, 0)) ||
        !PyLong_Check(PyTuple_GET_ITEM(address, 1))) {
        PyErr_SetString(PyExc_TypeError, "send(fd, [(data: bytes, (host: str, port: int))])");
        return NULL;
    }
    const char *host = PyUnicode_AsUTF8(PyTuple_GET_ITEM(address, 0));
    long port = PyLong_AsLong(PyTuple_GET_ITEM(address, 1));
    if (host == NULL || (port == -1 && PyErr_Occurred())) {
        return NULL;
    }
    if (port < 0 || port > 65535) {
        Py_RETURN_NONE;
    }
    PyObject *raw;
    struct sockaddr_in in4;
    struct sockaddr_in6 in6;
    memset(&in4, 0, sizeof(in4));
    memset(&in6, 0, sizeof(in6));
    if (inet_pton(AF_INET, host, &in4.sin_addr) == 1) {
        in4.sin_family = AF_INET;
        in4.sin_port = htons((unsigned short)port);
        raw = PyBytes_FromStringAndSize((const char *)&in4, sizeof(in4));
    } else if (inet_pton(AF_INET6, host, &in6.sin6_addr) == 1) {
        in6.sin6_family = AF_INET6;
        in6.sin6_port = htons((unsigned short)port);
        raw = PyBytes_FromStringAndSize((const char *)&in6, sizeof(in6));
    } else {
        Py_RETURN_NONE;
    }
    if (raw == NULL || remember(destinations, address, raw) < 0) {
        Py_XDECREF(raw);
        return NULL;
    }
    return raw;
}

static PyObject *
send_batch(PyObject *module, PyObject *args)
{
    (void)module;
    int fd;
    PyObject *items;
    if (!PyArg_ParseTuple(args, "iO!:send", &fd, &PyList_Type, &items)) {
        return NULL;
    }
    Py_ssize_t total = PyList_GET_SIZE(items);
    Py_ssize_t done = 0;
    PyObject *held[BATCH]; /* the raw addresses of the batch, kept alive across the call */
    while (done < total) {
        int count = 0;
        Py_ssize_t next = done;
        while (count < BATCH && next < total) {
            PyObject *item = PyList_GET_ITEM(items, next);
            if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2 ||
                !PyBytes_Check(PyTuple_GET_ITEM(item, 0))) {
                for (int i = 0; i < count; i++) {
                    Py_DECREF(held[i]);
                }
                PyErr_SetString(PyExc_TypeError,
                                "send(fd, [(data: bytes, (host: str, port: int))])");
                return NULL;
            }
            PyObject *raw = destination_of(PyTuple_GET_ITEM(item, 1));
            if (raw == NULL) {
                for (int i = 0; i < count; i++) {
                    Py_DECREF(held[i]);
                }
                return NULL;
            }
            if (raw == Py_None) { /* not a numeric address: lost, like a datagram */
                Py_DECREF(raw);
                if (count > 0) {
                    break; /* send what is batched first */
                }
                done = ++next;
                continue;
            }
            PyObject *data = PyTuple_GET_ITEM(item, 0);
            held[count] = raw;
            vectors[count].iov_base = PyBytes_AS_STRING(data);
            vectors[count].iov_len = (size_t)PyBytes_GET_SIZE(data);
            memset(&headers[count].msg_hdr, 0, sizeof(struct msghdr));
            headers[count].msg_hdr.msg_name = PyBytes_AS_STRING(raw);
            headers[count].msg_hdr.msg_namelen = (socklen_t)PyBytes_GET_SIZE(raw);
            headers[count].msg_hdr.msg_iov = &vectors[count];
            headers[count].msg_hdr.msg_iovlen = 1;
            count++;
            next++;
        }
        if (count == 0) {
            continue; /* only skipped ones: done moved on */
        }
        int sent;
        do {
            sent = sendmmsg(fd, headers, (unsigned int)count, MSG_DONTWAIT);
        } while (sent < 0 && errno == EINTR);
        int error = errno;
        for (int i = 0; i < count; i++) {
            Py_DECREF(held[i]);
        }
        if (sent > 0) {
            done += sent; /* fewer than count: the next one failed, and is tried again */
        } else if (sent == 0 || error == EAGAIN || error == EWOULDBLOCK || error == ENOBUFS) {
            break; /* the kernel takes no more now */
        } else {
            done += 1; /* refused for good (family, route, size): lost, like a datagram */
        }
    }
    return PyLong_FromSsize_t(done);
}

static PyMethodDef methods[] = {
    {"receive", receive_batch, METH_O, "receive(fd) -> [(data, (host, port))]"},
    {"send", send_batch, METH_VARARGS, "send(fd, [(data, (host, port))]) -> how many are done"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_datagrams",
    .m_doc = "UDP datagrams in and out by the batch (recvmmsg, sendmmsg), in C.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__datagrams(void)
{
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL) {
        return NULL;
    }
    sources = PyDict_New();
    destinations = PyDict_New();
    if (sources == NULL || destinations == NULL ||
        PyModule_AddIntConstant(module, "BATCH", BATCH) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
