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
#include <structmember.h>
#include <arpa/inet.h>
#include <stddef.h>
#include <stdint.h>
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

/* Counter: one request count (metrics.Counters keeps one per (route, reason, action)). The gate
 * adds to the cell of its outcome directly: no dict lookup, no hashing, no int object per request. */
typedef struct {
    PyObject_HEAD
    long long value;
} Counter;

static PyMemberDef counter_members[] = {
    {"value", T_LONGLONG, offsetof(Counter, value), 0, "The count."},
    {NULL, 0, 0, 0, NULL},
};

static PyObject *
counter_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    if (PyTuple_GET_SIZE(args) != 0 || (kwds != NULL && PyDict_GET_SIZE(kwds) != 0)) {
        PyErr_SetString(PyExc_TypeError, "Counter() takes no arguments");
        return NULL;
    }
    return type->tp_alloc(type, 0);
}

static PyObject *
counter_repr(Counter *self)
{
    return PyUnicode_FromFormat("Counter(%lld)", self->value);
}

static PyTypeObject CounterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "originshield._speedups.Counter",
    .tp_basicsize = sizeof(Counter),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Counter(): a request count (value), added to by the gate without the GIL ever released.",
    .tp_new = counter_new,
    .tp_repr = (reprfunc)counter_repr,
    .tp_members = counter_members,
};

/* ---------------------------------------------------------------------------------------------
 * Gate and Shield: the middleware's hot path in C.
 *
 * Gate replays the cheap half of Engine.decide (engine.py) for one ASGI scope: the route match, the
 * single header pass, the secret's verdict, the early refusals and the decision cache key. It
 * answers only when that half settles the request (an early outcome, or a hit in the decision cache
 * that the Python path fills: both read the same dict, so a hit is the very tuple decide() would
 * return; hits are also remembered in the gate's memo, see memo_find). Anything else (a cache
 * miss, a path that may hold a dot segment, a non-conforming scope) answers None and
 * Engine.decide runs, which also raises the same errors for malformed scopes. Engine.decide is the
 * reference; tests/test_gate.py compares both on crafted and random scopes.
 *
 * Shield is OriginShield's base class and its __call__: with a Gate bound to the middleware (its
 * app, counters and refusal), an allowed request is counted, stripped of the secret header and
 * handed to the app without a Python frame of ours; everything else calls the Python method
 * (``_handle``).
 *
 * Why C: under uvicorn the same work in Python cost ~20,000 instructions per request, a fifth of
 * a trivial app's whole request; issue 3 wants the middleware within 3%.
 * ------------------------------------------------------------------------------------------- */

typedef struct {
    PyObject *index; /* route index (int), the first element of every cache key */
    int uses_xff, uses_cva, uses_cvc;
    PyObject *no_client, *secret_duplicate, *secret_missing, *secret_invalid, *stale; /* NULL: none */
    PyObject *allowed;               /* the route's "allowed" outcome */
    Counter *allowed_count;          /* its counter cell (bound gates only), else NULL */
} RouteInfo;

typedef struct {
    PyObject *prefix; /* str, not empty */
    Py_ssize_t plen;
    Py_UCS4 last; /* prefix[-1] */
    int is_dir;
    PyObject *methods; /* frozenset, or NULL for any method */
    RouteInfo info;
} RouteEntry;

/* A decision-cache key as the C side sees it: the same inputs as Engine.decide's tuple, plus a hash
 * of them for the memo (see memo_find). xff, cva and cvc are NULL when not part of the key;
 * verified is -1 when not part of it (routes that read no CloudFront header). */
typedef struct {
    RouteInfo *info;
    PyObject *host, *xff, *cva, *cvc; /* borrowed */
    int verified;
    uint64_t hash;
} MemoKey;

/* A memo slot: a MemoKey whose objects it owns, and the cached result it was found with. */
typedef struct {
    RouteInfo *info; /* NULL: empty */
    PyObject *host, *xff, *cva, *cvc;
    int verified;
    uint64_t hash;
    PyObject *result;
} Memo;

/* Slots in a gate's memo: sets of MEMO_WAYS (a power of two each). 2,048 slots are 112 KiB,
 * allocated on first use. Two ways: a client cycling through a few hundred keys would otherwise
 * find a fifth of them sharing a slot with another, each evicting the other on every round. */
#define MEMO_SLOTS 2048
#define MEMO_WAYS 2

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *keep;  /* the constructor's arguments: own every object the pointers below borrow */
    PyObject *cache; /* dict behind the engine's cachetools cache, or NULL */
    Py_ssize_t nroutes;
    RouteEntry *routes;
    RouteInfo dflt;
    PyObject *xff, *secret, *cva, *cvc; /* lower-case header names (bytes); secret NULL if none */
    PyObject *values;                   /* tuple of accepted secret values, NULL if none */
    PyObject *duplicate;                /* marker for a repeated CloudFront header */
    Py_ssize_t max_xff, max_host, max_header;
    /* Bound to a middleware (else NULL): app(scope, receive, send), the counter cells by counter
     * key (dict), refuse(scope, send), logged() -> whether refusals are logged (then the Python
     * path runs: it builds the log line). */
    PyObject *app, *cells, *refuse, *logged;
    int report_only;
    Memo *memo;         /* MEMO_SLOTS slots, or NULL until the first cache hit */
    uint64_t seed;      /* keys the memo's hash (from the process's string hash secret) */
    uint64_t hash_mask; /* all ones; 0 in tests (Gate._collide): every key in one set */
} Gate;

typedef struct {
    RouteInfo *info;
    PyObject *headers; /* a strong reference (the caller releases it) */
    Py_ssize_t secret_at, secret_count;
} Found;

static PyObject *s_type, *s_http, *s_websocket, *s_method, *s_path, *s_headers, *s_client, *s_get, *s_allowed,
    *s_counter_key, *s_handle;

static int
route_info(PyObject *t, RouteInfo *info)
{
    PyObject *o[11];
    if (!PyTuple_CheckExact(t) || PyTuple_GET_SIZE(t) != 11) {
        PyErr_SetString(PyExc_TypeError, "route info must be an 11-tuple");
        return -1;
    }
    for (int i = 0; i < 11; i++) {
        o[i] = PyTuple_GET_ITEM(t, i);
    }
    if (!PyLong_CheckExact(o[0]) || !PyTuple_CheckExact(o[4]) || !PyTuple_CheckExact(o[5])) {
        PyErr_SetString(PyExc_TypeError, "route info: bad index or early results");
        return -1;
    }
    info->index = o[0];
    info->uses_xff = PyObject_IsTrue(o[1]);
    info->uses_cva = PyObject_IsTrue(o[2]);
    info->uses_cvc = PyObject_IsTrue(o[3]);
    info->no_client = o[4];
    info->secret_duplicate = o[5];
    info->secret_missing = o[6] == Py_None ? NULL : o[6];
    info->secret_invalid = o[7] == Py_None ? NULL : o[7];
    info->stale = o[8] == Py_None ? NULL : o[8];
    info->allowed = o[9];
    if (o[10] != Py_None && !Py_IS_TYPE(o[10], &CounterType)) {
        PyErr_SetString(PyExc_TypeError, "route info: the allowed counter must be a Counter or None");
        return -1;
    }
    info->allowed_count = o[10] == Py_None ? NULL : (Counter *)o[10];
    if (info->uses_xff < 0 || info->uses_cva < 0 || info->uses_cvc < 0) {
        return -1;
    }
    return 0;
}

/* hmac.compare_digest's algorithm (CPython Modules/_operator.c, _tscmp): the time depends only on
 * the accepted value's length, never on where a guess first differs (no branch on the data; the
 * accumulator is volatile so that the compiler cannot add an early exit). Eight bytes at a time. */
static int
equal_ct(const unsigned char *guess, Py_ssize_t glen, const unsigned char *accepted, Py_ssize_t alen)
{
    const unsigned char *left = guess;
    volatile uint64_t result = 0;
    uint64_t a, b;
    Py_ssize_t i = 0;
    if (glen != alen) {
        left = accepted;
        result = 1;
    }
    for (; i + 8 <= alen; i += 8) {
        memcpy(&a, left + i, 8);
        memcpy(&b, accepted + i, 8);
        result |= a ^ b;
    }
    for (; i < alen; i++) {
        result |= (uint64_t)(left[i] ^ accepted[i]);
    }
    return result == 0;
}

/* name.lower() == known (known is lower case): ASGI promises lower-case names, a crafted scope may
 * not keep the promise, and "X-Forwarded-For" must not sidestep the trust model (as decide()). */
static int
name_is(PyObject *name, PyObject *known)
{
    Py_ssize_t n = PyBytes_GET_SIZE(name);
    const unsigned char *a, *b;
    if (known == NULL || n != PyBytes_GET_SIZE(known)) {
        return 0;
    }
    a = (const unsigned char *)PyBytes_AS_STRING(name);
    b = (const unsigned char *)PyBytes_AS_STRING(known);
    if (memcmp(a, b, (size_t)n) == 0) {
        return 1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = a[i];
        if (c >= 'A' && c <= 'Z') {
            c = (unsigned char)(c + 32);
        }
        if (c != b[i]) {
            return 0;
        }
    }
    return 1;
}

/* path.startswith(prefix) and (is_dir or whole segment) and (methods is None or method in methods) */
static int
route_matches(RouteEntry *e, PyObject *path, Py_ssize_t len, PyObject *method)
{
    int kind = PyUnicode_KIND(path);
    if (len < e->plen || PyUnicode_READ(kind, PyUnicode_DATA(path), e->plen - 1) != e->last) {
        return 0; /* the last code unit first: most paths miss most prefixes there, without a memcmp */
    }
    if (kind == PyUnicode_KIND(e->prefix)) { /* same storage width: code units compare exactly */
        if (memcmp(PyUnicode_DATA(path), PyUnicode_DATA(e->prefix), (size_t)(e->plen * kind)) != 0) {
            return 0;
        }
    } else {
        Py_ssize_t r = PyUnicode_Tailmatch(path, e->prefix, 0, e->plen, -1);
        if (r <= 0) {
            return (int)r;
        }
    }
    if (!e->is_dir && len != e->plen && PyUnicode_READ(kind, PyUnicode_DATA(path), e->plen) != '/') {
        return 0; /* whole segments only: "/api" covers "/api/x", never "/apix" */
    }
    if (e->methods != NULL) {
        return PySet_Contains(e->methods, method);
    }
    return 1;
}

/* Whether "/." occurs in path: the candidates for a "." or ".." segment, which decide() refuses. */
static int
has_slash_dot(PyObject *path, Py_ssize_t len)
{
    int kind = PyUnicode_KIND(path);
    const void *data = PyUnicode_DATA(path);
    if (kind == PyUnicode_1BYTE_KIND) {
        const char *s = data, *p = s, *end = s + len;
        while ((p = memchr(p, '.', (size_t)(end - p))) != NULL) {
            if (p > s && p[-1] == '/') {
                return 1;
            }
            p++;
        }
        return 0;
    }
    for (Py_ssize_t i = 1; i < len; i++) {
        if (PyUnicode_READ(kind, data, i) == '.' && PyUnicode_READ(kind, data, i - 1) == '/') {
            return 1;
        }
    }
    return 0;
}

/* 0 when a str's PEP 393 data can be read (-1 with an exception set). Before 3.12 a "legacy" str
 * made by deprecated C APIs may not be ready yet. */
static int
str_ready(PyObject *o)
{
#if PY_VERSION_HEX < 0x030C0000
    return PyUnicode_READY(o);
#else
    (void)o;
    return 0;
#endif
}

static int
is_str(PyObject *o, PyObject *interned)
{
    return o == interned || (PyUnicode_CheckExact(o) && PyUnicode_Compare(o, interned) == 0);
}

/* scope[name] as a new reference, NULL when absent (or on error: check PyErr_Occurred). A scope
 * whose keys run Python code when compared could change the scope under us: the references keep
 * what we read alive. */
static PyObject *
scope_get(PyObject *scope, PyObject *name)
{
    PyObject *value = PyDict_GetItemWithError(scope, name);
    Py_XINCREF(value);
    return value;
}

/* The memo: a two-way set-associative table in front of the cachetools dict, filled from its
 * hits. A dict hit costs a key tuple (allocated, hashed with SipHash, compared element by element:
 * ~1,000 instructions, a fifth of the middleware's cost per request under uvicorn); a memo hit is
 * a multiply-xorshift hash of the same bytes and a memcmp. It is safe because it only ever holds
 * what the dict held in this gate's lifetime, and a gate lives exactly as long as its engine's
 * cache (a new snapshot, configuration or GeoIP database builds a new engine, cache and gate). It
 * is bounded (MEMO_SLOTS, the key lengths bounded as the dict's) and a collision only evicts: a
 * crafted key can at worst send a request back to the dict, never to another key's answer,
 * because a hit compares every byte of the key. */
static uint64_t
memo_mix(uint64_t h, const void *data, Py_ssize_t n)
{
    const unsigned char *p = data;
    uint64_t w;
    h ^= (uint64_t)n * 0x9E3779B97F4A7C15ULL; /* the length keeps "ab"+"c" apart from "a"+"bc" */
    for (; n >= 8; n -= 8, p += 8) {
        memcpy(&w, p, 8);
        h = (h ^ w) * 0xBF58476D1CE4E5B9ULL;
        h ^= h >> 31;
    }
    if (n > 0) {
        w = 0;
        memcpy(&w, p, (size_t)n);
        h = (h ^ w) * 0xBF58476D1CE4E5B9ULL;
        h ^= h >> 31;
    }
    return h;
}

static uint64_t
memo_mix_bytes(uint64_t h, PyObject *b)
{
    return b == NULL ? h * 0x94D049BB133111EBULL : memo_mix(h, PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b));
}

static void
memo_key(Gate *g, MemoKey *k)
{
    uint64_t h = g->seed ^ (uint64_t)(uintptr_t)k->info;
    h = memo_mix(h, PyUnicode_DATA(k->host), PyUnicode_GET_LENGTH(k->host) * PyUnicode_KIND(k->host));
    h = memo_mix_bytes(h, k->xff);
    if (k->verified >= 0) {
        h = memo_mix_bytes(memo_mix_bytes(h ^ (uint64_t)k->verified, k->cva), k->cvc);
    }
    k->hash = (h ^ (h >> 29)) & g->hash_mask;
}

static int
same_bytes(PyObject *a, PyObject *b)
{
    return a == b || (a != NULL && b != NULL && PyBytes_GET_SIZE(a) == PyBytes_GET_SIZE(b) &&
                      memcmp(PyBytes_AS_STRING(a), PyBytes_AS_STRING(b), (size_t)PyBytes_GET_SIZE(a)) == 0);
}

/* Two equal str objects have the same length and storage kind (PEP 393's canonical form). */
static int
same_str(PyObject *a, PyObject *b)
{
    return a == b || (PyUnicode_GET_LENGTH(a) == PyUnicode_GET_LENGTH(b) && PyUnicode_KIND(a) == PyUnicode_KIND(b) &&
                      memcmp(PyUnicode_DATA(a), PyUnicode_DATA(b),
                             (size_t)(PyUnicode_GET_LENGTH(a) * PyUnicode_KIND(a))) == 0);
}

/* The result remembered for k (borrowed), or NULL. */
static PyObject *
memo_find(Gate *g, const MemoKey *k)
{
    Memo *m;
    if (g->memo == NULL) {
        return NULL;
    }
    m = &g->memo[(k->hash & (MEMO_SLOTS / MEMO_WAYS - 1)) * MEMO_WAYS];
    for (int way = 0; way < MEMO_WAYS; way++, m++) {
        if (m->info == k->info && m->hash == k->hash && m->verified == k->verified && same_str(m->host, k->host) &&
            same_bytes(m->xff, k->xff) && same_bytes(m->cva, k->cva) && same_bytes(m->cvc, k->cvc)) {
            return m->result;
        }
    }
    return NULL;
}

static int
memo_store(Gate *g, const MemoKey *k, PyObject *result)
{
    Memo *m, old;
    if (g->memo == NULL) {
        g->memo = PyMem_Calloc(MEMO_SLOTS, sizeof(Memo));
        if (g->memo == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    /* The newest key goes first in its set; the others move down one way and the last one leaves. */
    m = &g->memo[(k->hash & (MEMO_SLOTS / MEMO_WAYS - 1)) * MEMO_WAYS];
    old = m[MEMO_WAYS - 1];
    memmove(m + 1, m, (MEMO_WAYS - 1) * sizeof(Memo));
    /* The slot is whole again before the old objects go: freeing them may run arbitrary code. */
    m->info = k->info;
    m->hash = k->hash;
    m->verified = k->verified;
    m->host = Py_NewRef(k->host);
    m->xff = Py_XNewRef(k->xff);
    m->cva = Py_XNewRef(k->cva);
    m->cvc = Py_XNewRef(k->cvc);
    m->result = Py_NewRef(result);
    Py_XDECREF(old.host);
    Py_XDECREF(old.xff);
    Py_XDECREF(old.cva);
    Py_XDECREF(old.cvc);
    Py_XDECREF(old.result);
    return 0;
}

static void
memo_free(Gate *g)
{
    Memo *memo = g->memo;
    g->memo = NULL;
    if (memo == NULL) {
        return;
    }
    for (Py_ssize_t i = 0; i < MEMO_SLOTS; i++) {
        Py_XDECREF(memo[i].host);
        Py_XDECREF(memo[i].xff);
        Py_XDECREF(memo[i].cva);
        Py_XDECREF(memo[i].cvc);
        Py_XDECREF(memo[i].result);
    }
    PyMem_Free(memo);
}

/* The cheap half of Engine.decide: a new reference to the result, Py_None (take the Python path),
 * or NULL with an exception set. Never modifies the scope. */
static PyObject *
gate_decide(Gate *g, PyObject *scope, Found *found)
{
    PyObject *kind = NULL, *method = NULL, *path = NULL, *headers = NULL, *client = NULL, *host;
    PyObject *xff = NULL, *cva = NULL, *cvc = NULL, *secret_value = NULL, *key, *result = NULL, *tmp;
    RouteInfo *info = &g->dflt;
    MemoKey mk;
    Py_ssize_t n, plen, secret_at = -1, secret_count = 0;
    int verified = 0, r;

    if (!PyDict_CheckExact(scope)) {
        Py_RETURN_NONE;
    }
    kind = scope_get(scope, s_type);
    if (kind == NULL) {
        goto slow;
    }
    if (is_str(kind, s_http)) {
        method = scope_get(scope, s_method);
        if (method == NULL || !PyUnicode_CheckExact(method)) {
            goto slow;
        }
    } else if (is_str(kind, s_websocket)) {
        method = Py_NewRef(s_get); /* a websocket handshake is a GET */
    } else {
        goto slow;
    }
    path = scope_get(scope, s_path);
    headers = path == NULL ? NULL : scope_get(scope, s_headers);
    if (path == NULL || !PyUnicode_CheckExact(path) || str_ready(path) < 0 || headers == NULL ||
        !(PyList_CheckExact(headers) || PyTuple_CheckExact(headers))) {
        goto slow;
    }
    client = scope_get(scope, s_client);
    if (client == NULL && PyErr_Occurred()) {
        goto error;
    }
    plen = PyUnicode_GET_LENGTH(path);

    for (Py_ssize_t i = 0; i < g->nroutes; i++) {
        r = route_matches(&g->routes[i], path, plen, method);
        if (r < 0) {
            goto error;
        }
        if (r) {
            info = &g->routes[i].info;
            break;
        }
    }

    n = PySequence_Fast_GET_SIZE(headers);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(headers, i), *name, *value;
        if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 2) {
            goto slow;
        }
        name = PyTuple_GET_ITEM(item, 0);
        value = PyTuple_GET_ITEM(item, 1);
        if (!PyBytes_CheckExact(name)) {
            goto slow;
        }
        if (name_is(name, g->xff)) {
            if (!PyBytes_CheckExact(value)) {
                goto slow;
            }
            if (xff == NULL) {
                xff = Py_NewRef(value);
            } else { /* RFC 9110 5.3: repeated lines are one list, in order */
                Py_ssize_t a = PyBytes_GET_SIZE(xff), b = PyBytes_GET_SIZE(value);
                tmp = PyBytes_FromStringAndSize(NULL, a + 1 + b);
                if (tmp == NULL) {
                    goto error;
                }
                memcpy(PyBytes_AS_STRING(tmp), PyBytes_AS_STRING(xff), (size_t)a);
                PyBytes_AS_STRING(tmp)[a] = ',';
                memcpy(PyBytes_AS_STRING(tmp) + a + 1, PyBytes_AS_STRING(value), (size_t)b);
                Py_SETREF(xff, tmp);
            }
        } else if (name_is(name, g->secret)) {
            secret_count++;
            secret_at = i;
            secret_value = value;
        } else if (name_is(name, g->cva)) {
            cva = cva == NULL ? value : g->duplicate;
        } else if (name_is(name, g->cvc)) {
            cvc = cvc == NULL ? value : g->duplicate;
        }
    }

    /* No secret configured is "not_configured", which is not "verified" (False in the cache key). */
    if (g->values != NULL && secret_count == 1) {
        if (!PyBytes_CheckExact(secret_value)) {
            goto slow;
        }
        for (Py_ssize_t v = 0; v < PyTuple_GET_SIZE(g->values); v++) { /* every value: no early exit */
            PyObject *accepted = PyTuple_GET_ITEM(g->values, v);
            verified |= equal_ct((const unsigned char *)PyBytes_AS_STRING(secret_value),
                                 PyBytes_GET_SIZE(secret_value),
                                 (const unsigned char *)PyBytes_AS_STRING(accepted), PyBytes_GET_SIZE(accepted));
        }
    }

    if (client == NULL || client == Py_None) {
        result = info->no_client;
    } else if (has_slash_dot(path, plen)) {
        goto slow; /* possibly "/./" or "/../": decide() refuses those (bad_path) */
    } else if (g->values != NULL && !verified && secret_count > 1) {
        result = info->secret_duplicate;
    } else if (g->values != NULL && !verified && secret_count == 0 && info->secret_missing != NULL) {
        result = info->secret_missing;
    } else if (g->values != NULL && !verified && secret_count == 1 && info->secret_invalid != NULL) {
        result = info->secret_invalid;
    } else if (info->stale != NULL) {
        result = info->stale;
    }
    if (result != NULL) {
        Py_INCREF(result);
        goto answer;
    }

    if (g->cache == NULL || !PyTuple_CheckExact(client) || PyTuple_GET_SIZE(client) < 1) {
        goto slow;
    }
    host = PyTuple_GET_ITEM(client, 0);
    if (!PyUnicode_CheckExact(host) || str_ready(host) < 0 || PyUnicode_GET_LENGTH(host) > g->max_host ||
        (xff != NULL && PyBytes_GET_SIZE(xff) > g->max_xff)) {
        goto slow; /* decide() decides these without the cache */
    }
    mk.info = info;
    mk.host = host;
    mk.xff = info->uses_xff ? xff : NULL;
    mk.cva = mk.cvc = NULL;
    mk.verified = -1;
    if (info->uses_cva || info->uses_cvc) {
        if ((cva != NULL && (!PyBytes_CheckExact(cva) || PyBytes_GET_SIZE(cva) > g->max_header)) ||
            (cvc != NULL && (!PyBytes_CheckExact(cvc) || PyBytes_GET_SIZE(cvc) > g->max_header))) {
            goto slow;
        }
        mk.verified = verified;
        mk.cva = info->uses_cva && verified ? cva : NULL;
        mk.cvc = info->uses_cvc && verified ? cvc : NULL;
    }
    memo_key(g, &mk);
    result = memo_find(g, &mk);
    if (result != NULL) {
        Py_INCREF(result);
        goto answer;
    }
    if (mk.verified < 0) {
        key = PyTuple_Pack(3, info->index, host, mk.xff ? mk.xff : Py_None);
    } else {
        key = PyTuple_Pack(6, info->index, host, mk.xff ? mk.xff : Py_None, verified ? Py_True : Py_False,
                           mk.cva ? mk.cva : Py_None, mk.cvc ? mk.cvc : Py_None);
    }
    if (key == NULL) {
        goto error;
    }
    result = PyDict_GetItemWithError(g->cache, key);
    Py_DECREF(key);
    if (result == NULL) {
        if (PyErr_Occurred()) {
            goto error;
        }
        goto slow;
    }
    Py_INCREF(result);
    if (memo_store(g, &mk, result) < 0) {
        Py_DECREF(result);
        goto error;
    }

answer:
    if (!PyTuple_CheckExact(result) || PyTuple_GET_SIZE(result) < 1) {
        Py_DECREF(result);
        PyErr_SetString(PyExc_RuntimeError, "corrupt decision result");
        goto error;
    }
    found->info = info;
    found->headers = Py_NewRef(headers);
    found->secret_at = secret_at;
    found->secret_count = secret_count;
    goto done;

slow:
    result = PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    goto done;

error:
    result = NULL;

done:
    Py_XDECREF(xff);
    Py_XDECREF(kind);
    Py_XDECREF(method);
    Py_XDECREF(path);
    Py_XDECREF(headers);
    Py_XDECREF(client);
    return result;
}

/* The app never sees the secret: scope["headers"] becomes a new list without that one item (the
 * server's list is left alone: it may hold on to it). 1 done, 0 the headers are not as they were
 * when decided (take the Python path), -1 error. */
static int
strip_secret(Gate *g, PyObject *scope, Found *f)
{
    Py_ssize_t n = PySequence_Fast_GET_SIZE(f->headers);
    PyObject *stripped, *item;
    int r;
    if (f->secret_at >= n) {
        return 0;
    }
    item = PySequence_Fast_GET_ITEM(f->headers, f->secret_at);
    if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 2 || !PyBytes_CheckExact(PyTuple_GET_ITEM(item, 0)) ||
        !name_is(PyTuple_GET_ITEM(item, 0), g->secret)) {
        return 0;
    }
    stripped = PyList_New(n - 1);
    if (stripped == NULL) {
        return -1;
    }
    for (Py_ssize_t i = 0, j = 0; i < n; i++) {
        if (i != f->secret_at) {
            PyList_SET_ITEM(stripped, j++, Py_NewRef(PySequence_Fast_GET_ITEM(f->headers, i)));
        }
    }
    r = PyDict_SetItem(scope, s_headers, stripped);
    Py_DECREF(stripped);
    return r < 0 ? -1 : 1;
}

/* The whole request for a bound gate: what the app returned (allowed) or the refusal's awaitable
 * (refused, not logged), with *settled = 1; Py_None with *settled = 0 (take the Python path); or
 * NULL with an exception set. *settled tells an app that returned None (not an ASGI 3 app, but it
 * has run: it must not run twice) from a request the gate left to Python. */
static PyObject *
gate_admit(Gate *g, PyObject *scope, PyObject *receive, PyObject *send, int *settled)
{
    Found f;
    PyObject *result = gate_decide(g, scope, &f), *outcome, *args[3];
    int r;
    *settled = 0;
    if (result == NULL || result == Py_None) {
        return result;
    }
    outcome = PyTuple_GET_ITEM(result, 0);
    if (outcome == f.info->allowed && f.info->allowed_count != NULL) {
        Py_DECREF(result);
        /* Several copies of the secret cannot be allowed (secret_duplicate); still, never pass one. */
        r = f.secret_count > 1 ? 0 : f.secret_count == 1 ? strip_secret(g, scope, &f) : 1;
        Py_DECREF(f.headers);
        if (r <= 0) {
            if (r < 0) {
                return NULL;
            }
            Py_RETURN_NONE;
        }
        f.info->allowed_count->value++;
        args[0] = scope;
        args[1] = receive;
        args[2] = send;
        *settled = 1;
        return PyObject_Vectorcall(g->app, args, 3, NULL);
    }
    /* Refused: counted and answered here unless the Python path has to run (report-only mode lets
     * it through; a logged refusal needs the full decision for its log line). */
    Py_DECREF(f.headers);
    {
        PyObject *flag = PyObject_GetAttr(outcome, s_allowed), *key, *cell;
        r = flag == NULL ? -1 : PyObject_IsTrue(flag);
        Py_XDECREF(flag);
        if (r == 0 && g->report_only) {
            r = 1;
        }
        if (r == 0) {
            flag = PyObject_CallNoArgs(g->logged);
            r = flag == NULL ? -1 : PyObject_IsTrue(flag);
            Py_XDECREF(flag);
        }
        key = r == 0 ? PyObject_GetAttr(outcome, s_counter_key) : NULL;
        Py_DECREF(result);
        if (r != 0) {
            if (r < 0) {
                return NULL;
            }
            Py_RETURN_NONE;
        }
        if (key == NULL) {
            return NULL;
        }
        cell = PyDict_GetItemWithError(g->cells, key);
        Py_DECREF(key);
        if (cell == NULL || !Py_IS_TYPE(cell, &CounterType)) {
            if (PyErr_Occurred()) {
                return NULL;
            }
            Py_RETURN_NONE; /* not seeded: the Python path counts it */
        }
        ((Counter *)cell)->value++;
        args[0] = scope;
        args[1] = send;
        *settled = 1;
        return PyObject_Vectorcall(g->refuse, args, 2, NULL);
    }
}

static PyObject *
gate_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Found f;
    PyObject *result;
    if (PyVectorcall_NARGS(nargsf) != 1 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0)) {
        PyErr_SetString(PyExc_TypeError, "gate(scope) takes exactly one positional argument");
        return NULL;
    }
    result = gate_decide((Gate *)self, args[0], &f);
    if (result != NULL && result != Py_None) {
        Py_DECREF(f.headers);
    }
    return result;
}

static int
header_name(PyObject *o, PyObject **out, int optional)
{
    if (optional && o == Py_None) {
        *out = NULL;
        return 0;
    }
    if (!PyBytes_CheckExact(o)) {
        PyErr_SetString(PyExc_TypeError, "header names must be bytes");
        return -1;
    }
    *out = o;
    return 0;
}

/* Gate(routes, default, names, values, cache, duplicate, bounds, report_only, bind)
 *   routes: tuple of (prefix: str, is_dir: bool, methods: frozenset | None, info) in match order
 *   default, info: (index, uses_xff, uses_cva, uses_cvc, no_client, secret_duplicate,
 *                   secret_missing | None, secret_invalid | None, stale | None, allowed,
 *                   allowed's Counter | None)
 *   names: (x-forwarded-for, secret header | None, cloudfront-viewer-address, cloudfront-viewer-country)
 *   values: tuple of accepted secret values (bytes) or None; cache: dict or None
 *   bounds: (max X-Forwarded-For, max peer host, max CloudFront header) lengths in a cache key
 *   bind: None, or (app, cells, refuse, logged) for OriginShield.__call__ (Shield) */
static PyObject *
gate_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *routes, *dflt, *names, *values, *cache, *duplicate, *bind;
    Py_ssize_t max_xff, max_host, max_header;
    int report_only;
    Gate *g;
    if (kwds != NULL && PyDict_GET_SIZE(kwds) != 0) {
        PyErr_SetString(PyExc_TypeError, "Gate takes positional arguments only");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "O!O!O!OOO!(nnn)pO:Gate", &PyTuple_Type, &routes, &PyTuple_Type, &dflt,
                          &PyTuple_Type, &names, &values, &cache, &PyBytes_Type, &duplicate, &max_xff, &max_host,
                          &max_header, &report_only, &bind)) {
        return NULL;
    }
    if (PyTuple_GET_SIZE(names) != 4 || (values != Py_None && !PyTuple_CheckExact(values)) ||
        (cache != Py_None && !PyDict_CheckExact(cache)) ||
        (bind != Py_None && (!PyTuple_Check(bind) || PyTuple_GET_SIZE(bind) != 4 ||
                             !PyDict_CheckExact(PyTuple_GET_ITEM(bind, 1))))) {
        PyErr_SetString(PyExc_TypeError, "Gate: bad names, values, cache or bind");
        return NULL;
    }
    g = (Gate *)type->tp_alloc(type, 0);
    if (g == NULL) {
        return NULL;
    }
    g->vectorcall = gate_vectorcall;
    g->keep = Py_NewRef(args);
    g->cache = cache == Py_None ? NULL : Py_NewRef(cache);
    g->duplicate = duplicate;
    g->max_xff = max_xff;
    g->max_host = max_host;
    g->max_header = max_header;
    g->report_only = report_only;
    {
        /* A per-process secret (PYTHONHASHSEED's) and the gate's address: memo slots an outsider
         * cannot aim at. A collision only costs a dict lookup; this keeps even that off the table. */
        PyObject *tag = PyUnicode_FromString("originshield.memo");
        Py_hash_t h = tag == NULL ? -1 : PyObject_Hash(tag);
        Py_XDECREF(tag);
        if (h == -1) {
            Py_DECREF(g);
            return NULL;
        }
        g->seed = (uint64_t)h ^ ((uint64_t)(uintptr_t)g * 0x9E3779B97F4A7C15ULL);
        g->hash_mask = ~(uint64_t)0;
    }
    if (bind != Py_None) {
        g->app = PyTuple_GET_ITEM(bind, 0);
        g->cells = PyTuple_GET_ITEM(bind, 1);
        g->refuse = PyTuple_GET_ITEM(bind, 2);
        g->logged = PyTuple_GET_ITEM(bind, 3);
    }
    if (header_name(PyTuple_GET_ITEM(names, 0), &g->xff, 0) < 0 ||
        header_name(PyTuple_GET_ITEM(names, 1), &g->secret, 1) < 0 ||
        header_name(PyTuple_GET_ITEM(names, 2), &g->cva, 0) < 0 ||
        header_name(PyTuple_GET_ITEM(names, 3), &g->cvc, 0) < 0 || route_info(dflt, &g->dflt) < 0) {
        Py_DECREF(g);
        return NULL;
    }
    if (values != Py_None) {
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(values); i++) {
            if (!PyBytes_CheckExact(PyTuple_GET_ITEM(values, i))) {
                PyErr_SetString(PyExc_TypeError, "secret values must be bytes");
                Py_DECREF(g);
                return NULL;
            }
        }
        g->values = values;
    }
    if ((g->values == NULL) != (g->secret == NULL)) {
        PyErr_SetString(PyExc_ValueError, "Gate: a secret header name needs values, and values need a name");
        Py_DECREF(g);
        return NULL;
    }
    g->nroutes = PyTuple_GET_SIZE(routes);
    g->routes = PyMem_Calloc((size_t)(g->nroutes ? g->nroutes : 1), sizeof(RouteEntry));
    if (g->routes == NULL) {
        Py_DECREF(g);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < g->nroutes; i++) {
        PyObject *t = PyTuple_GET_ITEM(routes, i);
        RouteEntry *e = &g->routes[i];
        if (!PyTuple_CheckExact(t) || PyTuple_GET_SIZE(t) != 4 || !PyUnicode_CheckExact(PyTuple_GET_ITEM(t, 0)) ||
            !(PyTuple_GET_ITEM(t, 2) == Py_None || PyFrozenSet_CheckExact(PyTuple_GET_ITEM(t, 2)))) {
            PyErr_SetString(PyExc_TypeError, "route must be (prefix: str, is_dir, methods: frozenset | None, info)");
            Py_DECREF(g);
            return NULL;
        }
        e->prefix = PyTuple_GET_ITEM(t, 0);
        e->plen = PyUnicode_GET_LENGTH(e->prefix);
        if (e->plen == 0 || str_ready(e->prefix) < 0) {
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_ValueError, "route prefixes must not be empty");
            }
            Py_DECREF(g);
            return NULL;
        }
        e->last = PyUnicode_READ_CHAR(e->prefix, e->plen - 1);
        e->is_dir = PyObject_IsTrue(PyTuple_GET_ITEM(t, 1));
        e->methods = PyTuple_GET_ITEM(t, 2) == Py_None ? NULL : PyTuple_GET_ITEM(t, 2);
        if (e->is_dir < 0 || route_info(PyTuple_GET_ITEM(t, 3), &e->info) < 0) {
            Py_DECREF(g);
            return NULL;
        }
    }
    return (PyObject *)g;
}

static int
gate_traverse(Gate *self, visitproc visit, void *arg)
{
    Py_VISIT(self->keep);
    Py_VISIT(self->cache);
    if (self->memo != NULL) {
        for (Py_ssize_t i = 0; i < MEMO_SLOTS; i++) {
            Py_VISIT(self->memo[i].result);
        }
    }
    return 0;
}

static int
gate_clear(Gate *self)
{
    self->nroutes = 0; /* every borrowed pointer dies with keep */
    self->app = NULL;
    memo_free(self);
    Py_CLEAR(self->keep);
    Py_CLEAR(self->cache);
    return 0;
}

static void
gate_dealloc(Gate *self)
{
    PyObject_GC_UnTrack(self);
    gate_clear(self);
    PyMem_Free(self->routes);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
gate_collide(PyObject *self, PyObject *unused)
{
    memo_free((Gate *)self);
    ((Gate *)self)->hash_mask = 0;
    Py_RETURN_NONE;
}

static PyMethodDef gate_methods[] = {
    {"_collide", gate_collide, METH_NOARGS,
     "Tests only: every memo key hashes to 0 (one set), so that a hit rests on the key comparison."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject GateType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "originshield._speedups.Gate",
    .tp_basicsize = sizeof(Gate),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "Gate(...)(scope) -> the decision result settled without Python, or None (see engine.py).",
    .tp_methods = gate_methods,
    .tp_new = gate_new,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Gate, vectorcall),
    .tp_traverse = (traverseproc)gate_traverse,
    .tp_clear = (inquiry)gate_clear,
    .tp_dealloc = (destructor)gate_dealloc,
};

/* Shield: the base class of OriginShield, and its __call__. A Python subclass that does not define
 * __call__ inherits this slot as is, so that a server's app(scope, receive, send) runs no
 * Python-level dispatch: no type lookup of __call__, no method binding, no attribute lookup of the
 * gate (it sits in the object, as the attribute _fast). With the bound Gate in _fast, it asks the
 * gate first and calls self._handle(scope, receive, send) when that does not settle the request;
 * with anything else in _fast (None until the middleware is ready), always the latter. Called
 * through vectorcall (see enable_vectorcall) or tp_call (an argument tuple). */
typedef struct {
    PyObject_HEAD
    PyObject *fast;
    vectorcallfunc vectorcall;
} Shield;

static PyObject *shield_call(PyObject *self, PyObject *args, PyObject *kwargs);

/* A call with exactly (scope, receive, send): 1 when the gate settled it (*out: what to return, or
 * NULL with an exception set), 0 when it goes to self._handle. */
static int
shield_fast(PyObject *self, PyObject *const *args, PyObject **out)
{
    PyObject *fast = ((Shield *)self)->fast;
    int settled;
    if (fast == NULL || !Py_IS_TYPE(fast, &GateType) || ((Gate *)fast)->app == NULL) {
        return 0;
    }
    Py_INCREF(fast); /* a snapshot swap may replace _fast while the gate runs Python code */
    *out = gate_admit((Gate *)fast, args[0], args[1], args[2], &settled);
    Py_DECREF(fast);
    if (*out == NULL || settled) {
        return 1;
    }
    Py_DECREF(*out);
    return 0;
}

/* type(self).__call__ was reassigned in Python. 3.12 then clears the vectorcall flag; 3.11 keeps it
 * (enable_vectorcall set it), so the new __call__ is honoured here, through tp_call. */
static PyObject *
call_reassigned(PyObject *self, PyObject *const *args, Py_ssize_t n, PyObject *kwnames)
{
    ternaryfunc call = Py_TYPE(self)->tp_call;
    PyObject *tuple, *kwargs = NULL, *r = NULL;
    if (call == NULL) {
        return PyErr_Format(PyExc_TypeError, "'%.200s' object is not callable", Py_TYPE(self)->tp_name);
    }
    tuple = PyTuple_New(n);
    if (tuple == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyTuple_SET_ITEM(tuple, i, Py_NewRef(args[i]));
    }
    if (kwnames != NULL && PyTuple_GET_SIZE(kwnames) > 0) {
        kwargs = PyDict_New();
        for (Py_ssize_t i = 0; kwargs != NULL && i < PyTuple_GET_SIZE(kwnames); i++) {
            if (PyDict_SetItem(kwargs, PyTuple_GET_ITEM(kwnames, i), args[n + i]) < 0) {
                Py_CLEAR(kwargs);
            }
        }
        if (kwargs == NULL) {
            goto done;
        }
    }
    r = call(self, tuple, kwargs);
done:
    Py_DECREF(tuple);
    Py_XDECREF(kwargs);
    return r;
}

static PyObject *
shield_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t n = PyVectorcall_NARGS(nargsf);
    PyObject *r, *handle;
    if (Py_TYPE(self)->tp_call != shield_call) {
        return call_reassigned(self, args, n, kwnames);
    }
    if (n == 3 && (kwnames == NULL || PyTuple_GET_SIZE(kwnames) == 0) && shield_fast(self, args, &r)) {
        return r;
    }
    handle = PyObject_GetAttr(self, s_handle);
    if (handle == NULL) {
        return NULL;
    }
    r = PyObject_Vectorcall(handle, args, nargsf, kwnames);
    Py_DECREF(handle);
    return r;
}

static PyObject *
shield_call(PyObject *self, PyObject *args, PyObject *kwargs)
{
    PyObject *r, *handle;
    if (PyTuple_GET_SIZE(args) == 3 && (kwargs == NULL || PyDict_GET_SIZE(kwargs) == 0) &&
        shield_fast(self, &PyTuple_GET_ITEM(args, 0), &r)) {
        return r;
    }
    handle = PyObject_GetAttr(self, s_handle);
    if (handle == NULL) {
        return NULL;
    }
    r = PyObject_Call(handle, args, kwargs);
    Py_DECREF(handle);
    return r;
}

static PyObject *
shield_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *self = type->tp_alloc(type, 0);
    if (self != NULL) {
        ((Shield *)self)->vectorcall = shield_vectorcall;
    }
    return self;
}

static int
shield_traverse(Shield *self, visitproc visit, void *arg)
{
    Py_VISIT(self->fast);
    return 0;
}

static int
shield_clear(Shield *self)
{
    Py_CLEAR(self->fast);
    return 0;
}

static void
shield_dealloc(Shield *self)
{
    PyObject_GC_UnTrack(self);
    shield_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef shield_members[] = {
    {"_fast", T_OBJECT, offsetof(Shield, fast), 0, "The bound Gate that __call__ asks first (None: none)."},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject ShieldType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "originshield._speedups.Shield",
    .tp_basicsize = sizeof(Shield),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "Base class of OriginShield: __call__ asks the Gate in _fast first, then self._handle.",
    .tp_new = shield_new,
    .tp_call = shield_call,
    .tp_vectorcall_offset = offsetof(Shield, vectorcall),
    .tp_members = shield_members,
    .tp_traverse = (traverseproc)shield_traverse,
    .tp_clear = (inquiry)shield_clear,
    .tp_dealloc = (destructor)shield_dealloc,
};

static int
intern_all(void)
{
    struct {
        PyObject **slot;
        const char *text;
    } names[] = {
        {&s_type, "type"},       {&s_http, "http"},        {&s_websocket, "websocket"},
        {&s_method, "method"},   {&s_path, "path"},        {&s_headers, "headers"},
        {&s_client, "client"},   {&s_get, "GET"},          {&s_allowed, "allowed"},
        {&s_counter_key, "counter_key"}, {&s_handle, "_handle"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        *names[i].slot = PyUnicode_InternFromString(names[i].text);
        if (*names[i].slot == NULL) {
            return -1;
        }
    }
    return 0;
}

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

/* enable_vectorcall(cls): let a Python subclass of Shield that inherits its __call__ be called
 * through vectorcall, as Python 3.12 does by itself ("This flag can now be inherited by mutable
 * classes", tp_flags documentation); 3.11 calls it through tp_call, which packs the arguments in a
 * tuple per request. True when the subclass qualifies. */
static PyObject *
enable_vectorcall(PyObject *module, PyObject *cls)
{
    PyTypeObject *tp = (PyTypeObject *)cls;
    if (!PyType_Check(cls) || !PyType_IsSubtype(tp, &ShieldType)) {
        PyErr_SetString(PyExc_TypeError, "enable_vectorcall expects a subclass of Shield");
        return NULL;
    }
    if (tp->tp_call != shield_call || tp->tp_vectorcall_offset != offsetof(Shield, vectorcall)) {
        Py_RETURN_FALSE;
    }
    tp->tp_flags |= Py_TPFLAGS_HAVE_VECTORCALL;
    Py_RETURN_TRUE;
}

static PyMethodDef methods[] = {
    {"enable_vectorcall", enable_vectorcall, METH_O, "Call a Shield subclass through vectorcall (3.11)."},
    {"pack", pack, METH_O, "Parse and normalise an address to 4 or 16 bytes."},
    {"set_error", set_error, METH_O, "Set the exception class raised for invalid addresses."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_speedups", NULL, -1, methods};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    PyObject *m;
    if (PyType_Ready(&LookupType) < 0 || PyType_Ready(&GateType) < 0 || PyType_Ready(&CounterType) < 0 ||
        PyType_Ready(&ShieldType) < 0 || intern_all() < 0) {
        return NULL;
    }
    m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(m, "Lookup", (PyObject *)&LookupType) < 0 ||
        PyModule_AddObjectRef(m, "Gate", (PyObject *)&GateType) < 0 ||
        PyModule_AddObjectRef(m, "Shield", (PyObject *)&ShieldType) < 0 ||
        PyModule_AddObjectRef(m, "Counter", (PyObject *)&CounterType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
