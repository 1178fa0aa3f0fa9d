/* Optional accelerator for originshield.radix: address parsing and the trie walk in C.
 *
 * It walks the very structure radix.py builds (lists of 256 slots, leaves are tuples), so the
 * pure-Python walk in radix.py is the reference and the fallback; tests compare both against a
 * brute-force scan. Parsing uses the C library's inet_pton, which accepts only plain dotted-quad
 * IPv4 (no leading zeros, no shorthand like "1.2.3") and plain IPv6 (no zone id, no brackets,
 * no port), exactly like socket.inet_pton in the Python path.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <arpa/inet.h>
#include <stddef.h>
#include <string.h>

static PyObject *invalid_address = NULL; /* originshield.errors.InvalidAddress, set by radix.py */

static const unsigned char MAPPED[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

static PyObject *
raise_invalid(PyObject *ip)
{
    PyObject *type = invalid_address ? invalid_address : PyExc_ValueError;
    if (PyUnicode_Check(ip) && PyUnicode_GET_LENGTH(ip) > 64) {
        PyErr_Format(type, "not an IP address: a %zd-character string", PyUnicode_GET_LENGTH(ip));
    } else {
        PyErr_Format(type, "not an IP address: %R", ip);
    }
    return NULL;
}

/* Parse into buf; returns the number of address bytes (4 or 16) or -1 with an exception set.
 * IPv4-mapped IPv6 (::ffff:a.b.c.d, RFC 4291 section 2.5.5.2) is returned as the 4 IPv4 bytes so
 * that one host cannot match (or dodge) a rule under two spellings. */
static int
parse(PyObject *ip, unsigned char *buf)
{
    Py_ssize_t len;
    const char *s;
    if (!PyUnicode_Check(ip)) {
        PyErr_Format(PyExc_TypeError, "address must be str, not %.100s", Py_TYPE(ip)->tp_name);
        return -1;
    }
    s = PyUnicode_AsUTF8AndSize(ip, &len);
    if (s == NULL) { /* lone surrogates: not an address */
        PyErr_Clear();
        raise_invalid(ip);
        return -1;
    }
    if (len == 0 || len > 45 || (Py_ssize_t)strlen(s) != len) { /* INET6_ADDRSTRLEN - 1; NUL inside */
        raise_invalid(ip);
        return -1;
    }
    if (memchr(s, ':', (size_t)len) != NULL) {
        if (inet_pton(AF_INET6, s, buf) != 1) {
            raise_invalid(ip);
            return -1;
        }
        if (memcmp(buf, MAPPED, 12) == 0) {
            memmove(buf, buf + 12, 4);
            return 4;
        }
        return 16;
    }
    if (inet_pton(AF_INET, s, buf) != 1) {
        raise_invalid(ip);
        return -1;
    }
    return 4;
}

static PyObject *
walk(PyObject *node, const unsigned char *b, int n)
{
    for (int i = 0; i < n; i++) {
        if (!PyList_CheckExact(node) || PyList_GET_SIZE(node) != 256) {
            PyErr_SetString(PyExc_RuntimeError, "corrupt radix node");
            return NULL;
        }
        node = PyList_GET_ITEM(node, b[i]);
        if (PyTuple_CheckExact(node)) {
            return Py_NewRef(node);
        }
    }
    PyErr_SetString(PyExc_RuntimeError, "radix tree deeper than the address");
    return NULL;
}

/* Lookup(root4, root6): a callable bound to one tree, so that tree.lookup(ip) costs one vectorcall
 * and no Python frame. */
typedef struct {
    PyObject_HEAD
    PyObject *root4;
    PyObject *root6;
    vectorcallfunc vectorcall;
} Lookup;

static PyObject *
lookup_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    unsigned char buf[16];
    int n;
    Lookup *lk = (Lookup *)self;
    if (PyVectorcall_NARGS(nargsf) != 1 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0)) {
        PyErr_SetString(PyExc_TypeError, "lookup(ip) takes exactly one positional argument");
        return NULL;
    }
    n = parse(args[0], buf);
    if (n < 0) {
        return NULL;
    }
    return walk(n == 4 ? lk->root4 : lk->root6, buf, n);
}

static PyObject *
lookup_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *root4, *root6;
    Lookup *self;
    if (!PyArg_ParseTuple(args, "O!O!:Lookup", &PyList_Type, &root4, &PyList_Type, &root6)) {
        return NULL;
    }
    if (PyList_GET_SIZE(root4) != 256 || PyList_GET_SIZE(root6) != 256) {
        PyErr_SetString(PyExc_ValueError, "roots must have 256 slots");
        return NULL;
    }
    self = (Lookup *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->root4 = Py_NewRef(root4);
    self->root6 = Py_NewRef(root6);
    self->vectorcall = lookup_vectorcall;
    return (PyObject *)self;
}

/* packed(b: bytes of length 4 or 16) -> tuple: for an address already parsed by pack(). */
static PyObject *
lookup_packed(PyObject *self, PyObject *arg)
{
    Lookup *lk = (Lookup *)self;
    Py_ssize_t n;
    if (!PyBytes_CheckExact(arg)) {
        PyErr_Format(PyExc_TypeError, "packed address must be bytes, not %.100s", Py_TYPE(arg)->tp_name);
        return NULL;
    }
    n = PyBytes_GET_SIZE(arg);
    if (n != 4 && n != 16) {
        PyErr_SetString(PyExc_ValueError, "packed address must be 4 or 16 bytes");
        return NULL;
    }
    return walk(n == 4 ? lk->root4 : lk->root6, (const unsigned char *)PyBytes_AS_STRING(arg), (int)n);
}

static int
lookup_traverse(Lookup *self, visitproc visit, void *arg)
{
    Py_VISIT(self->root4);
    Py_VISIT(self->root6);
    return 0;
}

static int
lookup_clear(Lookup *self)
{
    Py_CLEAR(self->root4);
    Py_CLEAR(self->root6);
    return 0;
}

static void
lookup_dealloc(Lookup *self)
{
    PyObject_GC_UnTrack(self);
    lookup_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef lookup_methods[] = {
    {"packed", lookup_packed, METH_O, "Walk the trie for a packed address (4 or 16 bytes)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject LookupType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "originshield._speedups.Lookup",
    .tp_basicsize = sizeof(Lookup),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "Lookup(root4, root6)(ip) -> tuple of records, most specific first.",
    .tp_new = lookup_new,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Lookup, vectorcall),
    .tp_traverse = (traverseproc)lookup_traverse,
    .tp_clear = (inquiry)lookup_clear,
    .tp_dealloc = (destructor)lookup_dealloc,
    .tp_methods = lookup_methods,
};

/* pack(ip: str) -> bytes (4 bytes for IPv4 and IPv4-mapped IPv6, else 16) */
static PyObject *
pack(PyObject *module, PyObject *ip)
{
    unsigned char buf[16];
    int n = parse(ip, buf);
    if (n < 0) {
        return NULL;
    }
    return PyBytes_FromStringAndSize((const char *)buf, n);
}

static PyObject *
set_error(PyObject *module, PyObject *type)
{
    if (!PyType_Check(type) || !PyType_IsSubtype((PyTypeObject *)type, (PyTypeObject *)PyExc_ValueError)) {
        PyErr_SetString(PyExc_TypeError, "set_error expects a ValueError subclass");
        return NULL;
    }
    Py_XSETREF(invalid_address, Py_NewRef(type));
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"pack", pack, METH_O, "Parse and normalise an address to 4 or 16 bytes."},
    {"set_error", set_error, METH_O, "Set the exception class raised for invalid addresses."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_speedups", NULL, -1, methods};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    PyObject *m;
    if (PyType_Ready(&LookupType) < 0) {
        return NULL;
    }
    m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(m, "Lookup", (PyObject *)&LookupType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
