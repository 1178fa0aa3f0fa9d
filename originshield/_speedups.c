/* Optional accelerator for originshield: address parsing, the radix walk, and the whole per-request
 * decision of the middleware, in C.
 *
 * Every rule here has a readable Python reference, and the tests run both on the same inputs:
 *   - parse_text / Lookup: radix.py (_pack_py, _PyLookup);
 *   - parse_forwarded / parse_viewer: client_ip.py (parse_forwarded_entry, parse_viewer_address);
 *   - Decider.decide: engine/decide.py (Engine.decide), over the same compiled tables;
 *   - Budget: ratelimit.py (_PyBudget).
 * Parsing uses the C library's inet_pton, which accepts only plain dotted-quad IPv4 (no leading
 * zeros, no shorthand like "1.2.3") and plain IPv6 (no zone id, no brackets, no port), exactly like
 * socket.inet_pton in the Python path.
 *
 * There is no cache keyed on request bytes anywhere (design.md: a key that forgets one input is a
 * bypass): every request is decided whole, from the scope's own values.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <arpa/inet.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

static PyObject *invalid_address = NULL; /* originshield.errors.InvalidAddress, set by radix.py */

static const unsigned char MAPPED[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* Dotted-quad IPv4 exactly as glibc's inet_pton4 (resolv/inet_pton.c) reads it, which is what
 * socket.inet_pton calls in the Python reference: four decimal octets of at most 255, no leading
 * zero ("010" is octal to some parsers: a classic allowlist bypass), nothing else (glibc's loop
 * accepts exactly these strings). Written out here because the call into the C library cost ~360
 * instructions per address, and a request through an ALB has three. */
static int
parse_v4(const char *s, Py_ssize_t n, unsigned char *buf)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    int k = 0;
    for (;;) {
        unsigned int v, d;
        if (p == end || (v = (unsigned int)(*p - '0')) > 9) {
            return -1;
        }
        p++;
        /* At most three digits, unrolled: no per-digit overflow test. */
        if (p != end && (d = (unsigned int)(*p - '0')) <= 9) {
            if (v == 0) {
                return -1; /* a leading zero */
            }
            v = v * 10 + d;
            p++;
            if (p != end && (d = (unsigned int)(*p - '0')) <= 9) {
                v = v * 10 + d;
                p++;
                if (v > 255 || (p != end && (unsigned int)(*p - '0') <= 9)) {
                    return -1;
                }
            }
        }
        buf[k++] = (unsigned char)v;
        if (p == end) {
            return k == 4 ? 4 : -1;
        }
        if (*p++ != '.' || k == 4) {
            return -1;
        }
    }
}

/* Parse s[0:n] (not NUL-terminated) into buf: 4 or 16 (IPv4-mapped IPv6, RFC 4291 section
 * 2.5.5.2, is returned as the 4 IPv4 bytes so that one host cannot match or dodge a rule under two
 * spellings), or -1. No exception is set. Like radix._pack_py: IPv6 when the text holds a colon.
 * 45 is INET6_ADDRSTRLEN - 1: inet_pton accepts nothing longer, and an embedded NUL would end the
 * text early (socket.inet_pton refuses it). */
static int
parse_text(const char *s, Py_ssize_t n, unsigned char *buf)
{
    char text[46];
    if (n <= 0 || n > 45) {
        return -1;
    }
    if (parse_v4(s, n, buf) == 4) {
        return 4; /* digits and dots only: no colon, so IPv4 in the reference too */
    }
    if (memchr(s, ':', (size_t)n) == NULL || memchr(s, '\0', (size_t)n) != NULL) {
        return -1;
    }
    memcpy(text, s, (size_t)n);
    text[n] = '\0';
    if (inet_pton(AF_INET6, text, buf) != 1) {
        return -1;
    }
    if (memcmp(buf, MAPPED, 12) == 0) {
        memmove(buf, buf + 12, 4);
        return 4;
    }
    return 16;
}

/* A str address (the socket peer): 4, 16 or -1 (no exception set). A str that is not valid UTF-8
 * (lone surrogates) is not an address. */
static int
parse_str(PyObject *ip, unsigned char *buf)
{
    Py_ssize_t len;
    const char *s;
    if (PyUnicode_IS_COMPACT_ASCII(ip)) { /* the common case: its UTF-8 is its own data, no call */
        return parse_text((const char *)PyUnicode_DATA(ip), PyUnicode_GET_LENGTH(ip), buf);
    }
    s = PyUnicode_AsUTF8AndSize(ip, &len);
    if (s == NULL) {
        PyErr_Clear();
        return -1;
    }
    return parse_text(s, len, buf);
}

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

/* parse() for the Python API: -1 with InvalidAddress (or TypeError) set. */
static int
parse(PyObject *ip, unsigned char *buf)
{
    int n;
    if (!PyUnicode_Check(ip)) {
        PyErr_Format(PyExc_TypeError, "address must be str, not %.100s", Py_TYPE(ip)->tp_name);
        return -1;
    }
    n = parse_str(ip, buf);
    if (n < 0) {
        raise_invalid(ip);
    }
    return n;
}

/* RFC 9110 OWS around a list member: spaces and tabs (client_ip.py strips " \t"). */
static void
strip_ows(const char **s, Py_ssize_t *n)
{
    const char *p = *s;
    Py_ssize_t len = *n;
    while (len > 0 && (p[0] == ' ' || p[0] == '\t')) {
        p++;
        len--;
    }
    while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t')) {
        len--;
    }
    *s = p;
    *n = len;
}

/* client_ip._valid_port: 1 to 5 ASCII digits, at most 65535. */
static int
valid_port(const char *s, Py_ssize_t n)
{
    long v = 0;
    if (n < 1 || n > 5) {
        return 0;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return 0;
        }
        v = v * 10 + (s[i] - '0');
    }
    return v <= 65535;
}

/* client_ip.parse_forwarded_entry: "a.b.c.d", "v6", "a.b.c.d:port" or "[v6]:port" (the port is
 * optional inside brackets), with optional OWS. 4, 16 or -1. */
static int
parse_forwarded(const char *s, Py_ssize_t n, unsigned char *buf)
{
    int r;
    strip_ows(&s, &n);
    r = parse_text(s, n, buf);
    if (r > 0 || n == 0) {
        return r;
    }
    if (s[0] == '[') {
        const char *close = memchr(s, ']', (size_t)n), *rest;
        Py_ssize_t hlen, rlen;
        if (close == NULL) {
            return -1;
        }
        hlen = close - (s + 1);
        rest = close + 1;
        rlen = n - (rest - s);
        if (memchr(s + 1, ':', (size_t)hlen) == NULL || (rlen > 0 && !(rest[0] == ':' && valid_port(rest + 1, rlen - 1)))) {
            return -1;
        }
        return parse_text(s + 1, hlen, buf);
    }
    {
        const char *colon = memchr(s, ':', (size_t)n), *port;
        Py_ssize_t plen;
        if (colon == NULL) {
            return -1;
        }
        port = colon + 1;
        plen = n - (port - s);
        if (memchr(port, ':', (size_t)plen) != NULL || !valid_port(port, plen)) {
            return -1;
        }
        return parse_text(s, colon - s, buf) == 4 ? 4 : -1;
    }
}

/* client_ip.parse_viewer_address: CloudFront-Viewer-Address is "ip:port" with an unbracketed IPv6
 * address, so it splits on the last colon. 4, 16 or -1. */
static int
parse_viewer(const char *s, Py_ssize_t n, unsigned char *buf)
{
    const char *colon;
    strip_ows(&s, &n);
    colon = n > 0 ? memrchr(s, ':', (size_t)n) : NULL;
    if (colon == NULL || !valid_port(colon + 1, n - (colon + 1 - s))) {
        return -1;
    }
    return parse_text(s, colon - s, buf);
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

/* Counter: one request count (metrics.Counters keeps one per (route, reason, action)). The decider
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
    .tp_doc = "Counter(): a request count (value), added to by the decider with the GIL held.",
    .tp_new = counter_new,
    .tp_repr = (reprfunc)counter_repr,
    .tp_members = counter_members,
};

/* ---------------------------------------------------------------------------------------------
 * Budget: the log-line rate limiter of one (route, reason) (ratelimit.py has the Python twin and
 * the reference). A refusal flood must not turn into a log flood (design.md: "logging must not
 * amplify it"): the first `burst` lines of each `interval` seconds are logged in full, the rest are
 * counted (in `suppressed`, a Counter the metrics export) and summed up in one summary line, logged
 * before the next full line of a later interval (or by flush()).
 * ------------------------------------------------------------------------------------------- */
typedef struct {
    PyObject_HEAD
    long long burst;
    double interval;
    double start; /* when the current interval began (time.monotonic()'s clock) */
    long long used;    /* lines logged in the current interval */
    long long pending; /* lines suppressed since the last summary */
    PyObject *suppressed; /* a Counter */
} Budget;

static PyTypeObject BudgetType;

/* -1: suppress this line (counted); n >= 0: log it, after a summary of n suppressed lines if n > 0. */
static long long
budget_take(Budget *b, double now)
{
    long long summary = 0;
    if (now - b->start >= b->interval || now < b->start) {
        summary = b->pending;
        b->pending = 0;
        b->used = 0;
        b->start = now;
    }
    if (b->used < b->burst) {
        b->used++;
        return summary;
    }
    b->pending++;
    ((Counter *)b->suppressed)->value++;
    return -1;
}

static double
monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts); /* the clock of Python's time.monotonic() on Linux */
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static PyObject *
budget_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    long long burst;
    double interval;
    PyObject *cell;
    Budget *b;
    if (!PyArg_ParseTuple(args, "LdO!:Budget", &burst, &interval, &CounterType, &cell)) {
        return NULL;
    }
    if (burst < 1 || !(interval > 0.0)) {
        PyErr_SetString(PyExc_ValueError, "Budget: burst must be >= 1 and interval > 0");
        return NULL;
    }
    b = (Budget *)type->tp_alloc(type, 0);
    if (b != NULL) {
        b->burst = burst;
        b->interval = interval;
        b->start = -1e300;
        b->suppressed = Py_NewRef(cell);
    }
    return (PyObject *)b;
}

static void
budget_dealloc(Budget *self)
{
    Py_CLEAR(self->suppressed);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
budget_take_py(PyObject *self, PyObject *arg)
{
    double now = PyFloat_AsDouble(arg);
    if (now == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    return PyLong_FromLongLong(budget_take((Budget *)self, now));
}

static PyObject *
budget_flush(PyObject *self, PyObject *unused)
{
    Budget *b = (Budget *)self;
    long long n = b->pending;
    b->pending = 0;
    return PyLong_FromLongLong(n);
}

static PyMethodDef budget_methods[] = {
    {"take", budget_take_py, METH_O, "take(now) -> -1 (suppress) or the suppressed lines to summarise first."},
    {"flush", budget_flush, METH_NOARGS, "The lines suppressed since the last summary (and reset)."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef budget_members[] = {
    {"burst", T_LONGLONG, offsetof(Budget, burst), READONLY, "Full lines per interval."},
    {"interval", T_DOUBLE, offsetof(Budget, interval), READONLY, "Seconds."},
    {"pending", T_LONGLONG, offsetof(Budget, pending), READONLY, "Suppressed since the last summary."},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject BudgetType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "originshield._speedups.Budget",
    .tp_basicsize = sizeof(Budget),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Budget(burst, interval, suppressed_counter): log lines of one (route, reason).",
    .tp_new = budget_new,
    .tp_dealloc = (destructor)budget_dealloc,
    .tp_methods = budget_methods,
    .tp_members = budget_members,
};

/* ---------------------------------------------------------------------------------------------
 * Decider: Engine.decide (engine/decide.py) in C, over the tables engine/native.py builds (see it for
 * the structure, versioned by DECIDER_VERSION). decide() is pure: the same (method, path, client,
 * headers) always give the same outcome for one Decider, and nothing is remembered between calls.
 * Bound to a middleware (app, refuse, log), admit() also runs the request: counts its outcome,
 * strips the secret header and calls the app, or answers the refusal; Python code of ours runs
 * only for a log line the rate limiter lets through (and GeoIP lookups).
 *
 * Why C: in Python the decision costs ~50,000 instructions per request on CloudFront's real
 * traffic (every viewer different), a third of a small app's request under uvicorn (issue 12).
 * ------------------------------------------------------------------------------------------- */

#define DECIDER_VERSION 1
#define MAX_TRUSTED_HOPS 8                  /* client_ip.MAX_TRUSTED_HOPS (checked at construction) */
#define XFF_KEEP (MAX_TRUSTED_HOPS + 2)     /* entries a walk reads at most: hops, checked, viewer */

/* Reason codes, in decision.REASONS order (the tuple REASONS below is compared at import). */
enum {
    R_ALLOWED,
    R_MALFORMED_SCOPE,
    R_NO_CLIENT_ADDRESS,
    R_BAD_PATH,
    R_SECRET_DUPLICATE,
    R_SECRET_MISSING,
    R_SECRET_INVALID,
    R_RANGES_STALE,
    R_BAD_CLIENT_ADDRESS,
    R_PEER_FORWARDED,
    R_BAD_FORWARDED_CHAIN,
    R_PEER_NOT_ALLOWED,
    R_EDGE_NOT_ALLOWED,
    R_BAD_VIEWER_ADDRESS,
    R_COUNTRY_NOT_ALLOWED,
    R_COUNTRY_UNKNOWN,
    NREASONS
};
static const char *const REASON_NAMES[NREASONS] = {
    "allowed",           "malformed_scope",      "no_client_address",  "bad_path",
    "secret_duplicate",  "secret_missing",       "secret_invalid",     "ranges_stale",
    "bad_client_address", "peer_forwarded",      "bad_forwarded_chain", "peer_not_allowed",
    "edge_not_allowed",  "bad_viewer_address",   "country_not_allowed", "country_unknown",
};

enum { MODE_CLOUDFRONT, MODE_DIRECT, MODE_PEER };
#define NCOUNTRIES (26 * 26)

typedef struct {
    PyObject *outcomes[NREASONS]; /* borrowed (Decider.keep owns them) */
    Counter *cells[NREASONS];     /* counter cells (bound deciders), else NULL */
    Budget *budgets[NREASONS];    /* log budgets of the refusals (bound deciders), else NULL */
    int mode, require_secret, stale, uses_cva, uses_cvc;
    int country;        /* the policy has country rules */
    int has_allow, reject_unknown;
    unsigned char allow[NCOUNTRIES], deny[NCOUNTRIES]; /* by country index, see country_index */
    PyObject *lookup;   /* the policy's Lookup */
} RouteInfo;

typedef struct {
    PyObject *prefix; /* str, not empty */
    Py_ssize_t plen;
    Py_UCS4 last; /* prefix[-1] */
    int is_dir;
    PyObject *methods; /* frozenset of str, or NULL for any method */
    RouteInfo info;
} RouteEntry;

typedef struct {
    PyObject_HEAD
    PyObject *keep; /* the constructor's arguments: own every object the pointers below borrow */
    Py_ssize_t nroutes;
    RouteEntry *routes;
    RouteInfo dflt;
    PyObject *secret;  /* lower-case secret header name (bytes) or NULL */
    uint64_t secret_tail; /* name_tail() of the secret name (0 when it is shorter than 8 bytes) */
    PyObject *values;  /* tuple of accepted secret values (bytes) or NULL */
    PyObject *trusted; /* Lookup of the trusted proxies */
    int has_trusted;
    PyObject *geoip; /* country(packed) -> str | None, or NULL */
    int report_only;
    Py_ssize_t hints[5];          /* where the scope keys were found last (see scope_read) */
    PyObject *app, *refuse, *log; /* bound: app(scope, receive, send), refuse(scope, send),
                                     log(scope, outcome, summarised); else NULL */
} Decider;

static PyTypeObject DeciderType;

/* One decision's verdict and what admit() needs to finish the request. */
typedef struct {
    RouteInfo *info;
    int reason;
    Py_ssize_t secret_count, secret_at; /* copies of the secret header, index of the last one */
    PyObject *secret_item;              /* identity only (never dereferenced unless re-checked) */
} Verdict;

static PyObject *s_type, *s_http, *s_websocket, *s_method, *s_path, *s_headers, *s_client, *s_get,
    *s_handle;

static const char XFF_NAME[] = "x-forwarded-for";
static const char CVA_NAME[] = "cloudfront-viewer-address";
static const char CVC_NAME[] = "cloudfront-viewer-country";

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
    if (i < alen && alen >= 8) { /* the last bytes: one word that overlaps the previous one */
        memcpy(&a, left + alen - 8, 8);
        memcpy(&b, accepted + alen - 8, 8);
        result |= a ^ b;
        i = alen;
    }
    for (; i < alen; i++) {
        result |= (uint64_t)(left[i] ^ accepted[i]);
    }
    return result == 0;
}

/* name.lower() == known (known is lower case, n bytes): ASGI promises lower-case names, a crafted
 * or non-conforming server may not keep the promise, and "X-Forwarded-For" must not sidestep the
 * trust model. bytes.lower() changes ASCII A-Z only; so does this. */
static int
name_is(const unsigned char *a, const char *known, Py_ssize_t n)
{
    if (memcmp(a, known, (size_t)n) == 0) {
        return 1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = a[i];
        if (c >= 'A' && c <= 'Z') {
            c = (unsigned char)(c + 32);
        }
        if (c != (unsigned char)known[i]) {
            return 0;
        }
    }
    return 1;
}

/* The last 8 bytes of a header name of n >= 8 bytes, with bit 0x20 set in every byte (0 when n < 8).
 * Two names that are equal after bytes.lower() (A-Z to a-z: it sets that bit on letters only) have
 * equal tails, so unequal tails rule a name out with one compare; the exact name_is() check follows.
 * CloudFront + ALB requests carry ~17 headers, five of them 15 bytes long like X-Forwarded-For (issue 12). */
#define TAIL_FOLD UINT64_C(0x2020202020202020)
static uint64_t
name_tail(const char *s, Py_ssize_t n)
{
    uint64_t w;
    if (n < 8) {
        return 0;
    }
    memcpy(&w, s + n - 8, 8);
    return w | TAIL_FOLD;
}

static uint64_t xff_tail, cva_tail, cvc_tail; /* name_tail() of the three names (module init) */

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

/* Engine's route match: path.startswith(prefix) and (is_dir or whole segment) and (methods is
 * None or method in methods). method is an exact str: the set lookup runs no Python code. */
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

/* Whether a "/"-separated segment of path is "." or ".." (engine._has_dot_segment). */
static int
has_dot_segment(PyObject *path, Py_ssize_t len)
{
    int kind = PyUnicode_KIND(path);
    const void *data = PyUnicode_DATA(path);
    Py_ssize_t start = 0;
    if (kind == PyUnicode_1BYTE_KIND && memchr(data, '.', (size_t)len) == NULL) {
        return 0; /* the common case: no dot at all */
    }
    for (Py_ssize_t i = 0; i <= len; i++) {
        if (i == len || PyUnicode_READ(kind, data, i) == '/') {
            Py_ssize_t n = i - start;
            if ((n == 1 || n == 2) && PyUnicode_READ(kind, data, start) == '.' &&
                (n == 1 || PyUnicode_READ(kind, data, start + 1) == '.')) {
                return 1;
            }
            start = i + 1;
        }
    }
    return 0;
}

static PyObject *
walk(PyObject *node, const unsigned char *b, int n);

/* Whether lookup (a Lookup) has a record for the packed address: -1 on a corrupt tree. */
static int
lookup_hit(PyObject *lookup, const unsigned char *b, int n)
{
    PyObject *leaf = walk(n == 4 ? ((Lookup *)lookup)->root4 : ((Lookup *)lookup)->root6, b, n);
    int hit;
    if (leaf == NULL) {
        return -1;
    }
    hit = PyTuple_GET_SIZE(leaf) > 0;
    Py_DECREF(leaf);
    return hit;
}

/* The X-Forwarded-For entries from the right, without joining the lines (RFC 9110 5.3: repeated
 * lines are one comma-separated list, in order): the newest XFF_KEEP lines are kept (every line
 * holds at least one entry, and a walk reads at most XFF_KEEP entries). */
typedef struct {
    PyObject *lines[XFF_KEEP]; /* borrowed values, a ring indexed by line number % XFF_KEEP */
    Py_ssize_t count;          /* X-Forwarded-For lines in the scope */
    Py_ssize_t next;           /* lines already opened, newest first */
    const char *s;             /* the line being read */
    Py_ssize_t end;            /* its unread prefix length; -1: open the next line */
} Xff;

static int
xff_next(Xff *x, const char **entry, Py_ssize_t *n)
{
    const char *comma;
    if (x->end < 0) {
        PyObject *line;
        if (x->next >= x->count || x->next >= XFF_KEEP) {
            return 0;
        }
        line = x->lines[(x->count - 1 - x->next) % XFF_KEEP];
        x->next++;
        x->s = PyBytes_AS_STRING(line);
        x->end = PyBytes_GET_SIZE(line);
    }
    comma = x->end > 0 ? memrchr(x->s, ',', (size_t)x->end) : NULL;
    if (comma == NULL) {
        *entry = x->s;
        *n = x->end;
        x->end = -1;
    } else {
        *entry = comma + 1;
        *n = x->end - (comma + 1 - x->s);
        x->end = comma - x->s;
    }
    return 1;
}

static int
country_index(const char *s, Py_ssize_t n)
{
    if (n != 2 || s[0] < 'A' || s[0] > 'Z' || s[1] < 'A' || s[1] > 'Z') {
        return -1;
    }
    return (s[0] - 'A') * 26 + (s[1] - 'A');
}

/* Policy.country_verdict for a country index (-1: unknown). */
static int
country_verdict(RouteInfo *info, int c)
{
    if (c < 0) {
        return info->reject_unknown ? R_COUNTRY_UNKNOWN : R_ALLOWED;
    }
    if (info->deny[c] || (info->has_allow && !info->allow[c])) {
        return R_COUNTRY_NOT_ALLOWED;
    }
    return R_ALLOWED;
}

/* The resolver's answer for the viewer: a country index or -1 (unknown). An answer that is not a
 * two-letter upper-case str is unknown, and a resolver error is unknown too (fail closed where an
 * allow list is set), as in Engine.decide. -2 on an error that is not an Exception. */
static int
geoip_country(Decider *d, const unsigned char *viewer, int n)
{
    PyObject *packed = PyBytes_FromStringAndSize((const char *)viewer, n), *answer;
    int c = -1;
    if (packed == NULL) {
        return -2;
    }
    answer = PyObject_CallOneArg(d->geoip, packed);
    Py_DECREF(packed);
    if (answer == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_Exception)) {
            return -2;
        }
        PyErr_Clear(); /* the Python reference logs it when the decision is logged or explained */
        return -1;
    }
    if (PyUnicode_CheckExact(answer) && PyUnicode_IS_ASCII(answer)) {
        c = country_index((const char *)PyUnicode_DATA(answer), PyUnicode_GET_LENGTH(answer));
    }
    Py_DECREF(answer);
    return c;
}

#define HEADER_ITEM(item, name, value)                                                                                \
    (PyTuple_CheckExact(item)  ? (PyTuple_GET_SIZE(item) == 2 &&                                                      \
                                 ((name) = PyTuple_GET_ITEM(item, 0), (value) = PyTuple_GET_ITEM(item, 1), 1))        \
     : PyList_CheckExact(item) ? (PyList_GET_SIZE(item) == 2 &&                                                       \
                                 ((name) = PyList_GET_ITEM(item, 0), (value) = PyList_GET_ITEM(item, 1), 1))          \
                               : 0)

/* Engine.decide, step for step (the reason codes say which step refused). 0 with *v filled, or -1
 * with an exception set (memory, a corrupt tree, or a BaseException from the GeoIP resolver). */
static int
decide(Decider *d, PyObject *method, PyObject *path, PyObject *client, PyObject *headers, Verdict *v)
{
    RouteInfo *info = &d->dflt;
    Py_ssize_t plen = 0, n, slen = d->secret ? PyBytes_GET_SIZE(d->secret) : -1;
    PyObject *secret_value = NULL, *cva = NULL, *cvc = NULL, *host;
    Py_ssize_t cva_count = 0, cvc_count = 0;
    PyObject **items;
    /* The lengths of the names the pass looks for, as bits (a secret name of 64 bytes or more is
     * compared by length instead). */
    uint64_t lengths = (UINT64_C(1) << (sizeof(XFF_NAME) - 1)) | (UINT64_C(1) << (sizeof(CVA_NAME) - 1)) |
                       (slen >= 0 && slen < 64 ? UINT64_C(1) << slen : 0);
    Xff xff;
    int verified = 0, r, from_header = 0, nchecked, nviewer;
    unsigned char peer[16], checked[16], viewer[16];
    const unsigned char *viewer_p = NULL;
    const char *entry;
    Py_ssize_t elen;

    v->secret_count = 0;
    v->secret_at = -1;
    v->secret_item = NULL;
    xff.count = 0;
    xff.next = 0;
    xff.end = -1;
#define DONE(why_)                                                                                                     \
    do {                                                                                                               \
        v->info = info;                                                                                                \
        v->reason = (why_);                                                                                            \
        return 0;                                                                                                      \
    } while (0)

    if (!PyUnicode_CheckExact(method) || !PyUnicode_CheckExact(path) || str_ready(path) < 0 ||
        !(PyList_CheckExact(headers) || PyTuple_CheckExact(headers))) {
        if (PyErr_Occurred()) {
            return -1;
        }
        DONE(R_MALFORMED_SCOPE);
    }
    plen = PyUnicode_GET_LENGTH(path);
    for (Py_ssize_t i = 0; i < d->nroutes; i++) {
        r = route_matches(&d->routes[i], path, plen, method);
        if (r < 0) {
            return -1;
        }
        if (r) {
            info = &d->routes[i].info;
            break;
        }
    }

    /* One pass over the headers; no Python code runs in it (exact types only). */
    n = PySequence_Fast_GET_SIZE(headers);
    items = PySequence_Fast_ITEMS(headers);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = items[i], *name = NULL, *value = NULL;
        const unsigned char *nm;
        Py_ssize_t nlen;
        uint64_t tail;
        if (!HEADER_ITEM(item, name, value) || !PyBytes_CheckExact(name) || !PyBytes_CheckExact(value)) {
            DONE(R_MALFORMED_SCOPE);
        }
        nlen = PyBytes_GET_SIZE(name);
        if (nlen < 64 ? !((lengths >> nlen) & 1) : nlen != slen) {
            continue; /* most headers: no known name has this length */
        }
        nm = (const unsigned char *)PyBytes_AS_STRING(name);
        tail = name_tail((const char *)nm, nlen);
        if (nlen == sizeof(XFF_NAME) - 1 && tail == xff_tail && name_is(nm, XFF_NAME, nlen)) {
            xff.lines[xff.count % XFF_KEEP] = value;
            xff.count++;
        } else if (nlen == slen && tail == d->secret_tail && name_is(nm, PyBytes_AS_STRING(d->secret), nlen)) {
            v->secret_count++;
            v->secret_at = i;
            v->secret_item = item;
            secret_value = value;
        } else if (nlen == sizeof(CVA_NAME) - 1) {
            if (tail == cva_tail && name_is(nm, CVA_NAME, nlen)) {
                cva = cva_count++ ? cva : value;
            } else if (tail == cvc_tail && name_is(nm, CVC_NAME, nlen)) {
                cvc = cvc_count++ ? cvc : value;
            }
        }
    }

    /* The secret's verdict: every accepted value compared in constant time, no early exit. */
    if (d->values != NULL && v->secret_count == 1) {
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(d->values); i++) {
            PyObject *accepted = PyTuple_GET_ITEM(d->values, i);
            verified |= equal_ct((const unsigned char *)PyBytes_AS_STRING(secret_value), PyBytes_GET_SIZE(secret_value),
                                 (const unsigned char *)PyBytes_AS_STRING(accepted), PyBytes_GET_SIZE(accepted));
        }
    }

    if (client == Py_None) {
        DONE(R_NO_CLIENT_ADDRESS);
    }
    if (has_dot_segment(path, plen)) {
        DONE(R_BAD_PATH);
    }
    if (d->values != NULL) {
        if (v->secret_count > 1) {
            DONE(R_SECRET_DUPLICATE);
        }
        if (info->require_secret && v->secret_count == 0) {
            DONE(R_SECRET_MISSING);
        }
        if (info->require_secret && !verified) {
            DONE(R_SECRET_INVALID);
        }
    }
    if (info->stale) {
        DONE(R_RANGES_STALE);
    }

    if (!((PyTuple_CheckExact(client) && PyTuple_GET_SIZE(client) >= 1) ||
          (PyList_CheckExact(client) && PyList_GET_SIZE(client) >= 1))) {
        DONE(R_BAD_CLIENT_ADDRESS);
    }
    host = PySequence_Fast_GET_ITEM(client, 0);
    nchecked = PyUnicode_CheckExact(host) ? parse_str(host, peer) : -1;
    if (nchecked < 0) {
        DONE(R_BAD_CLIENT_ADDRESS);
    }
    memcpy(checked, peer, 16);
    r = 0;
    if (d->has_trusted) {
        r = lookup_hit(d->trusted, peer, nchecked);
        if (r < 0) {
            return -1;
        }
    }
    if (info->mode == MODE_PEER) {
        /* Health checks come from the load balancer itself and carry no X-Forwarded-For; one
         * forwarded through it is an internet client reaching the exempt path (issue 12). */
        if (r && xff.count > 0) {
            DONE(R_PEER_FORWARDED);
        }
    } else if (r) {
        /* Behind our own proxies: the hop to check is the rightmost entry not written by one of them
         * (topology 2: the CloudFront edge the ALB appended). */
        for (int walked = 0;; walked++) {
            if (walked > MAX_TRUSTED_HOPS || !xff_next(&xff, &entry, &elen)) {
                DONE(R_BAD_FORWARDED_CHAIN);
            }
            nchecked = parse_forwarded(entry, elen, checked);
            if (nchecked < 0) {
                DONE(R_BAD_FORWARDED_CHAIN);
            }
            r = lookup_hit(d->trusted, checked, nchecked);
            if (r < 0) {
                return -1;
            }
            if (!r) {
                break;
            }
        }
        from_header = 1;
    }

    r = lookup_hit(info->lookup, checked, nchecked);
    if (r <= 0) {
        if (r < 0) {
            return -1;
        }
        DONE(from_header ? R_EDGE_NOT_ALLOWED : R_PEER_NOT_ALLOWED);
    }

    if (info->mode == MODE_CLOUDFRONT) {
        if (info->uses_cva && verified && cva_count > 0) {
            nviewer = cva_count == 1 ? parse_viewer(PyBytes_AS_STRING(cva), PyBytes_GET_SIZE(cva), viewer) : -1;
            if (nviewer < 0) {
                DONE(R_BAD_VIEWER_ADDRESS);
            }
        } else {
            /* CloudFront appends the address it saw: the entry just left of the edge. It always
             * sends one, so a missing or unparsable viewer means this is not CloudFront's chain. */
            nviewer = xff_next(&xff, &entry, &elen) ? parse_forwarded(entry, elen, viewer) : -1;
            if (nviewer < 0) {
                DONE(R_BAD_FORWARDED_CHAIN);
            }
        }
        viewer_p = viewer;
    } else if (info->mode == MODE_PEER) {
        viewer_p = peer;
        nviewer = nchecked;
    } else {
        viewer_p = checked;
        nviewer = nchecked;
    }

    if (!info->country) {
        DONE(R_ALLOWED);
    }
    if (info->uses_cvc && verified && cvc_count > 0) {
        /* CloudFront's own header, trusted because the secret proves the request came through our
         * distribution; a malformed or repeated value is "unknown", never a guess. */
        r = cvc_count == 1 ? country_index(PyBytes_AS_STRING(cvc), PyBytes_GET_SIZE(cvc)) : -1;
    } else if (d->geoip != NULL) {
        r = geoip_country(d, viewer_p, nviewer);
        v->secret_item = NULL; /* Python code ran: strip_secret re-reads every item */
        if (r == -2) {
            return -1;
        }
    } else {
        r = -1;
    }
    DONE(country_verdict(info, r));
#undef DONE
}

/* decide(method, path, client, headers) -> the Outcome (pure: counts and logs nothing). */
static PyObject *
decider_decide(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Verdict v;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "decide(method, path, client, headers)");
        return NULL;
    }
    if (decide((Decider *)self, args[0], args[1], args[2], args[3], &v) < 0) {
        return NULL;
    }
    return Py_NewRef(v.info->outcomes[v.reason]);
}

/* The app never sees the secret (so it cannot leak it: logs, error pages, upstream calls). A list
 * (what every server builds) loses the secret in place; a tuple or another sequence is replaced in
 * scope["headers"] by a new list without it. In place is safe: the middleware already mutates the
 * server's scope dict (scope["headers"] replaced, as uvicorn's proxy_headers replaces
 * scope["client"]); the only other parties that see the list change are those holding the list
 * itself (the server, which built it for this request, and outer middleware), and for them the
 * secret being gone is the safer outcome (an outer access-log middleware cannot log it). A second
 * call with the same scope was already refused the same way (secret_missing). Not copying saves
 * ~520 instructions a request with CloudFront's 17 headers.
 *
 * The item decide() saw is removed if it is still in place (the common case: one copy, and no
 * Python code ran since the scope was read, so scope["headers"] is still this list); otherwise
 * every item named like the secret is removed, and scope["headers"] is set to the list decided on
 * (Python code may have replaced it). No Python code of a header object runs: items are compared
 * by identity or by raw bytes, and PyList_SetSlice drops the removed items only once the list is
 * consistent. 0 done, -1 error. */
static inline int
named_secret(PyObject *item, const char *secret, Py_ssize_t slen)
{
    PyObject *name = NULL, *value = NULL;
    (void)value;
    return HEADER_ITEM(item, name, value) && PyBytes_Check(name) && PyBytes_GET_SIZE(name) == slen &&
           name_is((const unsigned char *)PyBytes_AS_STRING(name), secret, slen);
}

static int
strip_secret(Decider *d, PyObject *scope, PyObject *headers, Verdict *v)
{
    Py_ssize_t n, j = 0, at = -1, copies = 0;
    PyObject *out, *item, **items;
    const char *secret = PyBytes_AS_STRING(d->secret);
    Py_ssize_t slen = PyBytes_GET_SIZE(d->secret);
    int in_place = PyList_CheckExact(headers), r;
    if (!(in_place || PyTuple_CheckExact(headers))) {
        return 0; /* a malformed scope (report-only) whose headers are no list: nothing to strip */
    }
    n = PySequence_Fast_GET_SIZE(headers);
    items = PySequence_Fast_ITEMS(headers);
    if (v->reason != R_MALFORMED_SCOPE && v->secret_count == 1 && v->secret_at < n &&
        items[v->secret_at] == v->secret_item) {
        if (in_place) {
            return PyList_SetSlice(headers, v->secret_at, v->secret_at + 1, NULL);
        }
        out = PyList_New(n - 1); /* a tuple: one copy without the item */
        if (out == NULL) {
            return -1;
        }
        for (Py_ssize_t i = 0; i < v->secret_at; i++) {
            PyList_SET_ITEM(out, i, Py_NewRef(items[i]));
        }
        for (Py_ssize_t i = v->secret_at + 1; i < n; i++) {
            PyList_SET_ITEM(out, i - 1, Py_NewRef(items[i]));
        }
    } else {
        for (Py_ssize_t i = 0; i < n; i++) {
            if (named_secret(items[i], secret, slen)) {
                at = copies++ == 0 ? i : at;
            }
        }
        if (in_place && copies <= 1) {
            /* After Python code ran (the GeoIP resolver, a logged line): usually the one copy again. */
            if (copies == 1 && PyList_SetSlice(headers, at, at + 1, NULL) < 0) {
                return -1;
            }
            return PyDict_SetItem(scope, s_headers, headers);
        }
        out = PyList_New(n);
        if (out == NULL) {
            return -1;
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            item = items[i];
            if (!named_secret(item, secret, slen)) {
                PyList_SET_ITEM(out, j++, Py_NewRef(item));
            }
        }
        Py_SET_SIZE(out, j); /* the slots past j were never filled (NULL) */
        if (in_place) {
            /* Linear whatever the number of copies (one slice assignment, not one per copy). */
            r = PyList_SetSlice(headers, 0, n, out);
            Py_DECREF(out);
            return r < 0 ? -1 : PyDict_SetItem(scope, s_headers, headers);
        }
    }
    r = PyDict_SetItem(scope, s_headers, out);
    Py_DECREF(out);
    return r;
}

/* scope["type"], ["method"], ["path"], ["headers"], ["client"] as new references (Py_None when
 * absent): 0, or 1 if a key was looked up normally (Python code may have run: a key's __eq__ that
 * changed the scope), or -1 with an exception set.
 *
 * Five dict lookups cost ~620 instructions, a fifth of the middleware's budget. A server builds
 * every scope with the same keys in the same order, and those keys are the interned strings we
 * hold; so each key is first looked for at the entry where it was last found (PyDict_Next from that
 * position, ~40 instructions), and taken only if the key found there is that very string object.
 * That is the dict's own value for the key, whatever the scope: the hint can only be right or
 * missed. On a miss one pass over the scope relearns the positions, and a key still not found
 * (equal but not identical, or absent) is looked up normally. Every value is owned before that
 * lookup, which may run Python code (a key's __eq__) that changes the scope. */
#define SCOPE_KEYS 5

static PyObject *scope_names[SCOPE_KEYS]; /* s_type, s_method, s_path, s_headers, s_client */

static int
scope_read(Decider *d, PyObject *scope, PyObject **out)
{
    PyObject **names = scope_names, *key, *value;
    Py_ssize_t pos;
    int missing = 0;
    for (int i = 0; i < SCOPE_KEYS; i++) {
        pos = d->hints[i];
        if (PyDict_Next(scope, &pos, &key, &value) && key == names[i]) {
            out[i] = Py_NewRef(value);
        } else {
            out[i] = NULL;
            missing = 1;
        }
    }
    if (!missing) {
        return 0;
    }
    pos = 0;
    while (PyDict_Next(scope, &pos, &key, &value)) {
        for (int i = 0; i < SCOPE_KEYS; i++) {
            if (key == names[i]) {
                d->hints[i] = pos - 1; /* PyDict_Next leaves pos one past the entry it returned */
                if (out[i] == NULL) {
                    out[i] = Py_NewRef(value);
                }
                break;
            }
        }
    }
    missing = 0;
    for (int i = 0; i < SCOPE_KEYS; i++) {
        if (out[i] == NULL) {
            missing = 1;
            value = PyDict_GetItemWithError(scope, names[i]);
            if (value == NULL && PyErr_Occurred()) {
                return -1;
            }
            out[i] = Py_NewRef(value == NULL ? Py_None : value);
        }
    }
    return missing;
}

static int
is_str(PyObject *o, PyObject *interned)
{
    return o == interned || (PyUnicode_CheckExact(o) && PyUnicode_Compare(o, interned) == 0);
}

/* The whole request for a bound decider: what the app returned (passed) or the refusal's awaitable,
 * with *settled = 1; or *settled = 0 (NULL result, no exception) for a scope the Python path takes
 * (lifespan, other scope types, a scope that is not a dict); or NULL with an exception set.
 * *settled tells an app that returned None (not an ASGI 3 app, but it has run: it must not run
 * twice) from a request left to Python. */
static PyObject *
decider_admit(Decider *d, PyObject *scope, PyObject *receive, PyObject *send, int *settled)
{
    PyObject *got[SCOPE_KEYS], *kind, *method, *path, *headers, *client, *result = NULL, *args[3];
    Verdict v;
    int passes, looked_up;
    *settled = 0;
    if (!PyDict_CheckExact(scope)) {
        return NULL;
    }
    looked_up = scope_read(d, scope, got);
    if (looked_up < 0) {
        for (int i = 0; i < SCOPE_KEYS; i++) {
            Py_XDECREF(got[i]);
        }
        *settled = 1;
        return NULL;
    }
    kind = got[0];
    method = got[1];
    path = got[2];
    headers = got[3];
    client = got[4];
    if (kind != s_http && !is_str(kind, s_http)) {
        if (!is_str(kind, s_websocket)) {
            goto done; /* lifespan and other types: the Python path */
        }
        Py_SETREF(got[1], Py_NewRef(s_get)); /* a websocket handshake is a GET */
        method = got[1];
    }
    *settled = 1;
    if (decide(d, method, path, client, headers, &v) < 0) {
        goto done;
    }
    if (looked_up) {
        v.secret_item = NULL; /* Python code may have run: strip_secret re-reads every item */
    }
    if (v.info->cells[v.reason] != NULL) {
        v.info->cells[v.reason]->value++;
    }
    passes = v.reason == R_ALLOWED || d->report_only;
    if (v.reason != R_ALLOWED && v.info->budgets[v.reason] != NULL) {
        long long summary = budget_take(v.info->budgets[v.reason], monotonic());
        if (summary >= 0) { /* this line is logged: the Python reference builds it (explain's trace) */
            PyObject *count = PyLong_FromLongLong(summary), *r;
            if (count == NULL) {
                goto done;
            }
            r = PyObject_CallFunctionObjArgs(d->log, scope, v.info->outcomes[v.reason], count, NULL);
            Py_DECREF(count);
            if (r == NULL) {
                goto done;
            }
            Py_DECREF(r);
            v.secret_item = NULL; /* Python code ran: strip_secret re-reads every item */
        }
    }
    if (!passes) {
        args[0] = scope;
        args[1] = send;
        result = PyObject_Vectorcall(d->refuse, args, 2, NULL);
        goto done;
    }
    /* A malformed scope passes only in report-only mode; its header pass stopped early, so every
     * item is checked for the secret. */
    if ((v.secret_count > 0 || (v.reason == R_MALFORMED_SCOPE && d->secret != NULL)) &&
        strip_secret(d, scope, headers, &v) < 0) {
        goto done;
    }
    args[0] = scope;
    args[1] = receive;
    args[2] = send;
    result = PyObject_Vectorcall(d->app, args, 3, NULL);
done:
    for (int i = 0; i < SCOPE_KEYS; i++) {
        Py_XDECREF(got[i]);
    }
    return result;
}

static int
flag(PyObject *o, int *out)
{
    int r = PyObject_IsTrue(o);
    if (r < 0) {
        return -1;
    }
    *out = r;
    return 0;
}

static int
country_set(PyObject *o, unsigned char *bits)
{
    if (!PyBytes_CheckExact(o) || PyBytes_GET_SIZE(o) != NCOUNTRIES) {
        PyErr_SetString(PyExc_TypeError, "country sets must be bytes of 676 flags");
        return -1;
    }
    memcpy(bits, PyBytes_AS_STRING(o), NCOUNTRIES);
    return 0;
}

/* info: (outcomes, cells | None, budgets | None, mode, require_secret, stale, uses_cva, uses_cvc,
 *        lookup, country | None); country: (allow flags | None, deny flags, reject_unknown). */
static int
route_info(PyObject *t, RouteInfo *info)
{
    PyObject *o[10];
    if (!PyTuple_CheckExact(t) || PyTuple_GET_SIZE(t) != 10) {
        PyErr_SetString(PyExc_TypeError, "route info must be a 10-tuple");
        return -1;
    }
    for (int i = 0; i < 10; i++) {
        o[i] = PyTuple_GET_ITEM(t, i);
    }
    if (!PyTuple_CheckExact(o[0]) || PyTuple_GET_SIZE(o[0]) != NREASONS ||
        (o[1] != Py_None && (!PyTuple_CheckExact(o[1]) || PyTuple_GET_SIZE(o[1]) != NREASONS)) ||
        (o[2] != Py_None && (!PyTuple_CheckExact(o[2]) || PyTuple_GET_SIZE(o[2]) != NREASONS)) ||
        !PyLong_CheckExact(o[3]) || !Py_IS_TYPE(o[8], &LookupType)) {
        PyErr_SetString(PyExc_TypeError, "route info: bad outcomes, cells, budgets, mode or lookup");
        return -1;
    }
    for (int i = 0; i < NREASONS; i++) {
        PyObject *cell = o[1] == Py_None ? Py_None : PyTuple_GET_ITEM(o[1], i);
        PyObject *budget = o[2] == Py_None ? Py_None : PyTuple_GET_ITEM(o[2], i);
        if ((cell != Py_None && !Py_IS_TYPE(cell, &CounterType)) ||
            (budget != Py_None && !Py_IS_TYPE(budget, &BudgetType))) {
            PyErr_SetString(PyExc_TypeError, "route info: cells must be Counters, budgets Budgets (or None)");
            return -1;
        }
        info->outcomes[i] = PyTuple_GET_ITEM(o[0], i);
        info->cells[i] = cell == Py_None ? NULL : (Counter *)cell;
        info->budgets[i] = budget == Py_None ? NULL : (Budget *)budget;
    }
    info->mode = (int)PyLong_AsLong(o[3]);
    if (info->mode < MODE_CLOUDFRONT || info->mode > MODE_PEER) {
        PyErr_SetString(PyExc_ValueError, "route info: unknown source mode");
        return -1;
    }
    if (flag(o[4], &info->require_secret) < 0 || flag(o[5], &info->stale) < 0 || flag(o[6], &info->uses_cva) < 0 ||
        flag(o[7], &info->uses_cvc) < 0) {
        return -1;
    }
    info->lookup = o[8];
    info->country = o[9] != Py_None;
    if (info->country) {
        PyObject *c = o[9];
        if (!PyTuple_CheckExact(c) || PyTuple_GET_SIZE(c) != 3) {
            PyErr_SetString(PyExc_TypeError, "route info: country rules must be a 3-tuple");
            return -1;
        }
        info->has_allow = PyTuple_GET_ITEM(c, 0) != Py_None;
        if ((info->has_allow && country_set(PyTuple_GET_ITEM(c, 0), info->allow) < 0) ||
            country_set(PyTuple_GET_ITEM(c, 1), info->deny) < 0 ||
            flag(PyTuple_GET_ITEM(c, 2), &info->reject_unknown) < 0) {
            return -1;
        }
    }
    return 0;
}

/* Decider(version, routes, default, secret, trusted, has_trusted, geoip, report_only, bind)
 *   version: DECIDER_VERSION (the structure below changes with it)
 *   routes: tuple of (prefix: str, is_dir, methods: frozenset | None, info) in match order
 *   default: info (see route_info)
 *   secret: None or (lower-case header name: bytes, accepted values: tuple of bytes)
 *   trusted: Lookup of the trusted proxies (has_trusted: whether it holds any)
 *   geoip: country(packed) -> str | None, or None
 *   bind: None, or (app, refuse, log) for admit() (the middleware's __call__) */
static PyObject *
decider_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *routes, *dflt, *secret, *trusted, *geoip, *bind;
    int version, has_trusted, report_only;
    Decider *d;
    if (kwds != NULL && PyDict_GET_SIZE(kwds) != 0) {
        PyErr_SetString(PyExc_TypeError, "Decider takes positional arguments only");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "iO!O!OO!pOpO:Decider", &version, &PyTuple_Type, &routes, &PyTuple_Type, &dflt,
                          &secret, &LookupType, &trusted, &has_trusted, &geoip, &report_only, &bind)) {
        return NULL;
    }
    if (version != DECIDER_VERSION) {
        PyErr_Format(PyExc_ValueError, "Decider: table version %d, this build reads %d", version, DECIDER_VERSION);
        return NULL;
    }
    if ((secret != Py_None && (!PyTuple_CheckExact(secret) || PyTuple_GET_SIZE(secret) != 2 ||
                               !PyBytes_CheckExact(PyTuple_GET_ITEM(secret, 0)) ||
                               !PyTuple_CheckExact(PyTuple_GET_ITEM(secret, 1)))) ||
        (bind != Py_None && (!PyTuple_CheckExact(bind) || PyTuple_GET_SIZE(bind) != 3))) {
        PyErr_SetString(PyExc_TypeError, "Decider: bad secret or bind");
        return NULL;
    }
    d = (Decider *)type->tp_alloc(type, 0);
    if (d == NULL) {
        return NULL;
    }
    d->keep = Py_NewRef(args);
    d->trusted = trusted;
    d->has_trusted = has_trusted;
    d->geoip = geoip == Py_None ? NULL : geoip;
    d->report_only = report_only;
    if (secret != Py_None) {
        PyObject *values = PyTuple_GET_ITEM(secret, 1);
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(values); i++) {
            if (!PyBytes_CheckExact(PyTuple_GET_ITEM(values, i))) {
                PyErr_SetString(PyExc_TypeError, "secret values must be bytes");
                Py_DECREF(d);
                return NULL;
            }
        }
        d->secret = PyTuple_GET_ITEM(secret, 0);
        d->secret_tail = name_tail(PyBytes_AS_STRING(d->secret), PyBytes_GET_SIZE(d->secret));
        d->values = values;
    }
    if (bind != Py_None) {
        d->app = PyTuple_GET_ITEM(bind, 0);
        d->refuse = PyTuple_GET_ITEM(bind, 1);
        d->log = PyTuple_GET_ITEM(bind, 2);
    }
    if (route_info(dflt, &d->dflt) < 0) {
        Py_DECREF(d);
        return NULL;
    }
    d->nroutes = PyTuple_GET_SIZE(routes);
    d->routes = PyMem_Calloc((size_t)(d->nroutes ? d->nroutes : 1), sizeof(RouteEntry));
    if (d->routes == NULL) {
        Py_DECREF(d);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < d->nroutes; i++) {
        PyObject *t = PyTuple_GET_ITEM(routes, i);
        RouteEntry *e = &d->routes[i];
        if (!PyTuple_CheckExact(t) || PyTuple_GET_SIZE(t) != 4 || !PyUnicode_CheckExact(PyTuple_GET_ITEM(t, 0)) ||
            !(PyTuple_GET_ITEM(t, 2) == Py_None || PyFrozenSet_CheckExact(PyTuple_GET_ITEM(t, 2)))) {
            PyErr_SetString(PyExc_TypeError, "route must be (prefix: str, is_dir, methods: frozenset | None, info)");
            Py_DECREF(d);
            return NULL;
        }
        e->prefix = PyTuple_GET_ITEM(t, 0);
        e->plen = PyUnicode_GET_LENGTH(e->prefix);
        if (e->plen == 0 || str_ready(e->prefix) < 0) {
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_ValueError, "route prefixes must not be empty");
            }
            Py_DECREF(d);
            return NULL;
        }
        e->last = PyUnicode_READ_CHAR(e->prefix, e->plen - 1);
        e->methods = PyTuple_GET_ITEM(t, 2) == Py_None ? NULL : PyTuple_GET_ITEM(t, 2);
        if (flag(PyTuple_GET_ITEM(t, 1), &e->is_dir) < 0 || route_info(PyTuple_GET_ITEM(t, 3), &e->info) < 0) {
            Py_DECREF(d);
            return NULL;
        }
    }
    return (PyObject *)d;
}

static int
decider_traverse(Decider *self, visitproc visit, void *arg)
{
    Py_VISIT(self->keep);
    return 0;
}

static int
decider_clear(Decider *self)
{
    self->nroutes = 0; /* every borrowed pointer dies with keep */
    self->app = NULL;
    self->geoip = NULL;
    self->secret = self->values = NULL;
    Py_CLEAR(self->keep);
    return 0;
}

static void
decider_dealloc(Decider *self)
{
    PyObject_GC_UnTrack(self);
    decider_clear(self);
    PyMem_Free(self->routes);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef decider_methods[] = {
    {"decide", (PyCFunction)(void (*)(void))decider_decide, METH_FASTCALL,
     "decide(method, path, client, headers) -> Outcome (Engine.decide's verdict, computed in C)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject DeciderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "originshield._speedups.Decider",
    .tp_basicsize = sizeof(Decider),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Decider(...): Engine.decide in C over the engine's compiled tables (see engine/native.py).",
    .tp_methods = decider_methods,
    .tp_new = decider_new,
    .tp_traverse = (traverseproc)decider_traverse,
    .tp_clear = (inquiry)decider_clear,
    .tp_dealloc = (destructor)decider_dealloc,
};
/* Shield: the base class of OriginShield, and its __call__. A Python subclass that does not define
 * __call__ inherits this slot as is, so that a server's app(scope, receive, send) runs no
 * Python-level dispatch: no type lookup of __call__, no method binding, no attribute lookup of the
 * decider (it sits in the object, as the attribute _fast). With the bound Decider in _fast, it runs
 * http and websocket requests whole and calls self._handle(scope, receive, send) for the rest;
 * with anything else in _fast (None until the middleware is ready), always the latter. Called
 * through vectorcall (see enable_vectorcall) or tp_call (an argument tuple). */
typedef struct {
    PyObject_HEAD
    PyObject *fast;
    vectorcallfunc vectorcall;
} Shield;

static PyObject *shield_call(PyObject *self, PyObject *args, PyObject *kwargs);

/* A call with exactly (scope, receive, send): 1 when the decider settled it (*out: what to return,
 * or NULL with an exception set), 0 when it goes to self._handle. */
static int
shield_fast(PyObject *self, PyObject *const *args, PyObject **out)
{
    PyObject *fast = ((Shield *)self)->fast;
    int settled;
    if (fast == NULL || !Py_IS_TYPE(fast, &DeciderType) || ((Decider *)fast)->app == NULL) {
        return 0;
    }
    Py_INCREF(fast); /* a snapshot swap may replace _fast while Python code (a log line) runs */
    *out = decider_admit((Decider *)fast, args[0], args[1], args[2], &settled);
    Py_DECREF(fast);
    return settled || *out != NULL || PyErr_Occurred();
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
    {"_fast", T_OBJECT, offsetof(Shield, fast), 0, "The bound Decider that __call__ runs requests with (None: none)."},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject ShieldType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "originshield._speedups.Shield",
    .tp_basicsize = sizeof(Shield),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "Base class of OriginShield: __call__ runs the Decider in _fast, else self._handle.",
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
        {&s_type, "type"},     {&s_http, "http"},       {&s_websocket, "websocket"},
        {&s_method, "method"}, {&s_path, "path"},       {&s_headers, "headers"},     {&s_client, "client"},
        {&s_get, "GET"},       {&s_handle, "_handle"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        *names[i].slot = PyUnicode_InternFromString(names[i].text);
        if (*names[i].slot == NULL) {
            return -1;
        }
    }
    scope_names[0] = s_type;
    scope_names[1] = s_method;
    scope_names[2] = s_path;
    scope_names[3] = s_headers;
    scope_names[4] = s_client;
    xff_tail = name_tail(XFF_NAME, sizeof(XFF_NAME) - 1);
    cva_tail = name_tail(CVA_NAME, sizeof(CVA_NAME) - 1);
    cvc_tail = name_tail(CVC_NAME, sizeof(CVC_NAME) - 1);
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

/* The C parsers of header values, for the differential tests against client_ip.py: kind 0 is an
 * X-Forwarded-For entry, 1 a CloudFront-Viewer-Address value. Packed bytes, or None. */
static PyObject *
parse_header_value(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    unsigned char buf[16];
    long kind;
    int n;
    if (nargs != 2 || !PyBytes_CheckExact(args[0]) || !PyLong_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "parse_header_value(value: bytes, kind: int)");
        return NULL;
    }
    kind = PyLong_AsLong(args[1]);
    n = kind == 0 ? parse_forwarded(PyBytes_AS_STRING(args[0]), PyBytes_GET_SIZE(args[0]), buf)
                  : parse_viewer(PyBytes_AS_STRING(args[0]), PyBytes_GET_SIZE(args[0]), buf);
    if (n < 0) {
        Py_RETURN_NONE;
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
    {"parse_header_value", (PyCFunction)(void (*)(void))parse_header_value, METH_FASTCALL,
     "parse_header_value(value, kind) -> packed | None (0: X-Forwarded-For entry, 1: Viewer-Address)."},
    {"set_error", set_error, METH_O, "Set the exception class raised for invalid addresses."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_speedups", NULL, -1, methods};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    PyObject *m, *reasons;
    if (PyType_Ready(&LookupType) < 0 || PyType_Ready(&DeciderType) < 0 || PyType_Ready(&CounterType) < 0 ||
        PyType_Ready(&BudgetType) < 0 || PyType_Ready(&ShieldType) < 0 || intern_all() < 0) {
        return NULL;
    }
    m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    reasons = PyTuple_New(NREASONS);
    for (int i = 0; reasons != NULL && i < NREASONS; i++) {
        PyObject *name = PyUnicode_FromString(REASON_NAMES[i]);
        if (name == NULL) {
            Py_CLEAR(reasons);
            break;
        }
        PyTuple_SET_ITEM(reasons, i, name);
    }
    if (reasons == NULL || PyModule_AddObject(m, "REASONS", reasons) < 0 ||
        PyModule_AddIntConstant(m, "DECIDER_VERSION", DECIDER_VERSION) < 0 ||
        PyModule_AddIntConstant(m, "MAX_TRUSTED_HOPS", MAX_TRUSTED_HOPS) < 0 ||
        PyModule_AddObjectRef(m, "Lookup", (PyObject *)&LookupType) < 0 ||
        PyModule_AddObjectRef(m, "Decider", (PyObject *)&DeciderType) < 0 ||
        PyModule_AddObjectRef(m, "Budget", (PyObject *)&BudgetType) < 0 ||
        PyModule_AddObjectRef(m, "Shield", (PyObject *)&ShieldType) < 0 ||
        PyModule_AddObjectRef(m, "Counter", (PyObject *)&CounterType) < 0) {
        Py_XDECREF(reasons);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
