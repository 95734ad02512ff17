/* The native XML -> JSON core: expat events straight to JSON bytes, one record at a time.
 *
 * Why C: the pure-Python converter pays for an lxml proxy and a few dict operations per
 * element; here an element costs a hash lookup and a few bytes in an arena. The parser
 * is the expat CPython already carries, reached through the `pyexpat.expat_CAPI`
 * capsule (as `_elementtree` does), so there is nothing to link and the expat is the
 * one `xmltodict.parse` uses in the same process: same verdicts, same attribute
 * normalisation, same DTD attribute defaults.
 *
 * Output conventions are xmltodict's with `process_namespaces=False`: names as
 * written, attributes (`xmlns*` included, DTD defaults applied) first in document
 * order, children grouped by name in order of first appearance (a list from the
 * second value on, or always for a `force_list` name), joined text last under the
 * text key. Records (the root's children in `json` mode, the record elements in
 * `jsonl`/`split`) are built in a per-record arena and written when they end; the
 * arena is reused, so memory holds one record.
 *
 * Safety: no external entity handler (expat then skips external entities and never
 * reads a DTD), parameter entities are never parsed, expat's amplification limits
 * are on (2.4.1+), and on top of them, in a document whose DTD declares entities or
 * attribute defaults, text plus attribute values plus element names may not exceed
 * EXPANSION_FACTOR times the input read so far plus EXPANSION_SLACK bytes. Depth,
 * attributes per element, name length and text size have the Python path's limits.
 * Handlers never call into Python; an error switches the handlers off and is
 * raised when the chunk's XML_Parse returns.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <expat.h>
#include <pyexpat.h>
#include <stdint.h>
#include <string.h>

#define EXPANSION_FACTOR 4
#define EXPANSION_SLACK (16u << 10)
#define ELEMENT_COST 8 /* what an element adds to the JSON beside its name */
#define SYMBOL_RESET 65536

enum { MODE_JSON = 0, MODE_JSONL = 1, MODE_SPLIT = 2, MODE_PEEK = 3 };
enum { KIND_ATTR = 1, KIND_ELEM = 2, KIND_TEXT = 3 };

static struct PyExpat_CAPI *capi;
static PyObject *ParseError;

/* -- growable byte buffer ------------------------------------------------------ */

typedef struct {
    char *p;
    size_t len, cap;
} Buf;

static int buf_grow(Buf *b, size_t extra) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra)
        cap *= 2;
    char *p = PyMem_RawRealloc(b->p, cap);
    if (p == NULL)
        return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

static inline int buf_reserve(Buf *b, size_t extra) {
    return b->len + extra <= b->cap ? 0 : buf_grow(b, extra);
}

static inline int buf_put(Buf *b, const char *s, size_t n) {
    if (n == 0)
        return 0; /* memcpy to a still-NULL buffer is undefined even for 0 bytes */
    if (buf_reserve(b, n) < 0)
        return -1;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    return 0;
}

static inline int buf_byte(Buf *b, char c) {
    if (buf_reserve(b, 1) < 0)
        return -1;
    b->p[b->len++] = c;
    return 0;
}

static void buf_free(Buf *b) {
    PyMem_RawFree(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

/* Keep a buffer's capacity across records unless one huge record inflated it. */
static void buf_trim(Buf *b, size_t keep) {
    b->len = 0;
    if (b->cap > keep)
        buf_free(b);
}

/* -- JSON strings and Python's str.strip() on UTF-8 ------------------------------- */

static const char HEX[] = "0123456789abcdef";
static unsigned char ESCAPED[256]; /* 1 for the bytes JSON strings escape */

static void init_escaped(void) {
    for (int c = 0; c < 0x20; c++)
        ESCAPED[c] = 1;
    ESCAPED['"'] = ESCAPED['\\'] = 1;
}

/* Nonzero when any of the eight bytes in `w` is one JSON strings escape: below 0x20,
 * '"' or '\\' (the classic exact "has a byte below n" and "has a zero byte" tests,
 * the latter on w ^ '"' and w ^ '\\'). UTF-8's high-bit bytes never match. */
static inline uint64_t needs_escape8(uint64_t w) {
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    uint64_t quote = w ^ (ones * '"'), backslash = w ^ (ones * '\\');
    return (((w - ones * 0x20) & ~w) | ((quote - ones) & ~quote) |
            ((backslash - ones) & ~backslash)) & highs;
}

/* The length of the prefix of s[0..n) that needs no escaping. */
static inline size_t clean_run(const char *s, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        if (needs_escape8(w))
            break;
    }
    if (i < n && n - i < 8) { /* the tail, padded with a byte that needs no escape */
        uint64_t w = 0x6161616161616161ull;
        memcpy(&w, s + i, n - i);
        if (!needs_escape8(w))
            return n;
    }
    while (i < n && !ESCAPED[(unsigned char)s[i]])
        i++;
    return i;
}

/* Write `s` as a JSON string the way orjson does: only '"', '\\' and C0 escaped.
 * Clean runs are found eight bytes at a time and copied whole: the common string
 * (nothing to escape) costs one reserve, a scan and one memcpy. Room is made for
 * what is left plus one escape at a time, so a huge text never reserves 6x. */
static int put_json_string(Buf *b, const char *s, size_t n) {
    if (buf_reserve(b, n + 2) < 0)
        return -1;
    b->p[b->len++] = '"';
    if (n == 0) { /* s may be NULL (an empty arena): memcpy must not see it */
        b->p[b->len++] = '"';
        return 0;
    }
    size_t i = 0;
    for (;;) {
        size_t run = clean_run(s + i, n - i);
        memcpy(b->p + b->len, s + i, run);
        b->len += run;
        i += run;
        if (i == n)
            break;
        if (buf_reserve(b, 6 + (n - i) + 1) < 0)
            return -1;
        unsigned char c = (unsigned char)s[i++];
        char *o = b->p + b->len;
        o[0] = '\\';
        size_t len = 2;
        switch (c) {
        case '"': o[1] = '"'; break;
        case '\\': o[1] = '\\'; break;
        case '\b': o[1] = 'b'; break;
        case '\f': o[1] = 'f'; break;
        case '\n': o[1] = 'n'; break;
        case '\r': o[1] = 'r'; break;
        case '\t': o[1] = 't'; break;
        default:
            o[1] = 'u'; o[2] = '0'; o[3] = '0';
            o[4] = HEX[c >> 4]; o[5] = HEX[c & 15];
            len = 6;
        }
        b->len += len;
    }
    b->p[b->len++] = '"';
    return 0;
}

/* Length of the whitespace character (Python's str.isspace) starting at s, else 0. */
static size_t space_at(const unsigned char *s, size_t n) {
    unsigned char c = s[0];
    if ((c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20))
        return 1;
    if (c == 0xc2 && n >= 2 && (s[1] == 0x85 || s[1] == 0xa0))
        return 2;
    if (n < 3)
        return 0;
    if (c == 0xe1 && s[1] == 0x9a && s[2] == 0x80)
        return 3;
    if (c == 0xe2 && s[1] == 0x80 &&
        (s[2] <= 0x8a || s[2] == 0xa8 || s[2] == 0xa9 || s[2] == 0xaf) && s[2] >= 0x80)
        return 3;
    if (c == 0xe2 && s[1] == 0x81 && s[2] == 0x9f)
        return 3;
    if (c == 0xe3 && s[1] == 0x80 && s[2] == 0x80)
        return 3;
    return 0;
}

/* Length of the whitespace character ending at s[n-1], else 0. */
static size_t space_before(const unsigned char *s, size_t n) {
    for (size_t k = 1; k <= 3 && k <= n; k++) {
        unsigned char c = s[n - k];
        if (k < 3 && (c & 0xc0) == 0x80)
            continue; /* a continuation byte: look further back for the lead */
        return space_at(s + n - k, k) == k ? k : 0;
    }
    return 0;
}

static inline int plain_ascii(unsigned char c) { return c > 0x20 && c < 0x80; }

static void strip(const char **s, size_t *n) {
    const unsigned char *p = (const unsigned char *)*s;
    size_t len = *n, k;
    if (len && plain_ascii(p[0]) && plain_ascii(p[len - 1]))
        return; /* the common case: nothing to strip at either end */
    while (len && (k = space_at(p, len)) != 0) {
        p += k;
        len -= k;
    }
    while (len && (k = space_before(p, len)) != 0)
        len -= k;
    *s = (const char *)p;
    *n = len;
}

/* -- symbols: every key (element name, prefixed attribute name, text key) once ---- */

typedef struct {
    char *raw;      /* the key itself */
    size_t rawlen;
    char *json;     /* the key as a JSON string followed by ':' */
    size_t jsonlen;
    uint32_t hash;
    int forced;     /* an element name listed in force_list */
} Sym;

/* Element names repeat: a direct-mapped cache keyed by a name's length and first
 * eight bytes finds most of them with one word compare, no hashing of the bytes. */
#define NAME_CACHE 256
typedef struct {
    uint64_t head;  /* the name's first eight bytes, zero-padded */
    uint32_t len;
    uint32_t sym;   /* symbol index + 1, 0 = empty */
} CachedName;

typedef struct {
    Sym *syms;
    uint32_t count, cap;
    uint32_t *slots; /* symbol index + 1, open addressing */
    uint32_t nslots;
    CachedName names[NAME_CACHE];
} Symbols;

static uint32_t hash_bytes(const char *s, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

static void symbols_clear(Symbols *t) {
    for (uint32_t i = 0; i < t->count; i++) {
        PyMem_RawFree(t->syms[i].raw);
        PyMem_RawFree(t->syms[i].json);
    }
    t->count = 0;
    memset(t->names, 0, sizeof t->names);
    if (t->slots)
        memset(t->slots, 0, t->nslots * sizeof(uint32_t));
}

static void symbols_free(Symbols *t) {
    symbols_clear(t);
    PyMem_RawFree(t->syms);
    PyMem_RawFree(t->slots);
    memset(t, 0, sizeof(*t));
}

static int symbols_grow(Symbols *t) {
    uint32_t n = t->nslots ? t->nslots * 2 : 1024;
    uint32_t *slots = PyMem_RawCalloc(n, sizeof(uint32_t));
    if (slots == NULL)
        return -1;
    for (uint32_t i = 0; i < t->count; i++) {
        uint32_t j = t->syms[i].hash & (n - 1);
        while (slots[j])
            j = (j + 1) & (n - 1);
        slots[j] = i + 1;
    }
    PyMem_RawFree(t->slots);
    t->slots = slots;
    t->nslots = n;
    return 0;
}

/* -- the converter ---------------------------------------------------------------- */

typedef struct {
    uint32_t sym;
    uint32_t kind;
    uint32_t next;  /* next entry in the parent's list, 0 = last */
    uint32_t gnext; /* next entry of the same key while writing */
    uint32_t first; /* KIND_ELEM: first entry of its value, 0 = empty */
    size_t off, len; /* KIND_ATTR / KIND_TEXT: bytes in the string arena */
} Entry;

typedef struct {
    uint32_t entry, first, tail;
    Buf text;
} Frame;

typedef struct {
    uint32_t head, tail, count, sym;
} Group;

typedef struct {
    size_t name_off, name_len, data_off, data_len;
    Py_ssize_t count;
} Segment;

typedef struct {
    PyObject_HEAD
    XML_Parser parser;
    int mode, strip_text, drop_empty, stopped, disable_entities, counting;
    Py_ssize_t max_depth, max_attributes, max_name, max_text;
    /* options */
    Buf attr_prefix, text_key;
    PyObject *force_list;  /* frozenset of bytes */
    PyObject *record_path; /* tuple of bytes, or None */
    PyObject *record_tag;  /* bytes, or None */
    /* state */
    Symbols symbols;
    uint32_t text_sym;
    Frame *frames;
    Py_ssize_t depth, rec_depth, matched;
    Entry *entries;
    uint32_t nentries, entries_cap;
    Buf strings;
    Group *groups;
    uint32_t ngroups, groups_cap;
    uint32_t *stamps, *group_of, stamp, marks_cap;
    /* output of the current feed */
    Buf out, names;
    Segment *segments;
    Py_ssize_t nsegments, segments_cap;
    /* the root, for json mode */
    Buf root_name, root_attrs, root_text;
    /* peek mode */
    Py_ssize_t peek_first, peek_repeated; /* symbol index + 1 */
    /* accounting */
    unsigned long long fed, produced;
    Py_ssize_t elements, records, skipped;
    /* the first error */
    const char *error;
    char error_buf[128];
    unsigned long error_line, error_column;
} Converter;

static void fail(Converter *c, const char *message) {
    if (c->error != NULL)
        return;
    c->error = message;
    c->error_line = (unsigned long)capi->GetErrorLineNumber(c->parser);
    c->error_column = (unsigned long)capi->GetErrorColumnNumber(c->parser) + 1;
    c->stopped = 1;
    capi->SetElementHandler(c->parser, NULL, NULL);
    capi->SetCharacterDataHandler(c->parser, NULL);
    capi->SetDefaultHandlerExpand(c->parser, NULL);
}

static void out_of_memory(Converter *c) { fail(c, "out of memory"); }

static int count_name(Converter *c, const char *name, size_t n) {
    if ((Py_ssize_t)n <= c->max_name)
        return 0;
    Py_ssize_t chars = 0;
    for (size_t i = 0; i < n; i++)
        chars += ((unsigned char)name[i] & 0xc0) != 0x80;
    if (chars <= c->max_name)
        return 0;
    snprintf(c->error_buf, sizeof c->error_buf, "a name is longer than %zd characters",
             c->max_name);
    fail(c, c->error_buf);
    return -1;
}

/* Only documents with an internal DTD subset declaring entities or attribute defaults
 * can produce more than they read, so only theirs is counted (see on_default). */
static int account(Converter *c, size_t n) {
    if (!c->counting)
        return 0;
    c->produced += n;
    if (c->produced <= EXPANSION_FACTOR * c->fed + EXPANSION_SLACK)
        return 0;
    fail(c, "entity expansion limit exceeded (entities expand too much)");
    return -1;
}

static long intern(Converter *c, const Buf *prefix, const char *s, size_t n);

static inline uint64_t head8(const char *s, size_t n) {
    uint64_t w = 0;
    memcpy(&w, s, n < 8 ? n : 8);
    return w;
}

/* Intern an element name (no prefix) through the name cache. */
static long intern_name(Converter *c, const char *s, size_t n) {
    uint64_t head = head8(s, n);
    uint64_t mix = (head ^ ((uint64_t)n * 0x9e3779b97f4a7c15ull)) * 0x9e3779b97f4a7c15ull;
    CachedName *slot = &c->symbols.names[mix >> 56];
    if (slot->sym && slot->head == head && slot->len == n &&
        (n <= 8 || !memcmp(c->symbols.syms[slot->sym - 1].raw + 8, s + 8, n - 8)))
        return (long)slot->sym - 1;
    long sym = intern(c, NULL, s, n);
    if (sym >= 0 && n <= UINT32_MAX)
        *slot = (CachedName){head, (uint32_t)n, (uint32_t)sym + 1};
    return sym;
}

/* Intern `prefix + s`; returns the symbol index or -1 (out of memory). */
static long intern(Converter *c, const Buf *prefix, const char *s, size_t n) {
    Symbols *t = &c->symbols;
    size_t plen = prefix ? prefix->len : 0;
    uint32_t h = hash_bytes(s, n);
    if (plen)
        h ^= hash_bytes(prefix->p, plen) * 31u;
    if (t->nslots == 0 || (t->count + 1) * 2 > t->nslots) {
        if (symbols_grow(t) < 0)
            return -1;
    }
    uint32_t j = h & (t->nslots - 1);
    while (t->slots[j]) {
        Sym *y = &t->syms[t->slots[j] - 1];
        if (y->hash == h && y->rawlen == plen + n && (plen == 0 || !memcmp(y->raw, prefix->p, plen)) &&
            !memcmp(y->raw + plen, s, n))
            return (long)(t->slots[j] - 1);
        j = (j + 1) & (t->nslots - 1);
    }
    if (t->count == t->cap) {
        uint32_t cap = t->cap ? t->cap * 2 : 256;
        Sym *syms = PyMem_RawRealloc(t->syms, cap * sizeof(Sym));
        if (syms == NULL)
            return -1;
        t->syms = syms;
        t->cap = cap;
    }
    Buf raw = {0}, json = {0};
    if ((plen && buf_put(&raw, prefix->p, plen) < 0) || buf_put(&raw, s, n) < 0 ||
        put_json_string(&json, raw.p, raw.len) < 0 || buf_byte(&json, ':') < 0) {
        buf_free(&raw);
        buf_free(&json);
        return -1;
    }
    Sym *y = &t->syms[t->count];
    y->raw = raw.p;
    y->rawlen = raw.len;
    y->json = json.p;
    y->jsonlen = json.len;
    y->hash = h;
    y->forced = 0;
    if (plen == 0 && c->force_list != NULL && PySet_GET_SIZE(c->force_list) > 0) {
        PyObject *key = PyBytes_FromStringAndSize(s, (Py_ssize_t)n);
        if (key == NULL)
            return -1;
        y->forced = PySet_Contains(c->force_list, key) == 1;
        Py_DECREF(key);
    }
    t->slots[j] = ++t->count;
    return (long)(t->count - 1);
}

static uint32_t new_entry(Converter *c, uint32_t sym, uint32_t kind) {
    if (c->nentries >= c->entries_cap) {
        uint32_t cap = c->entries_cap ? c->entries_cap * 2 : 1024;
        Entry *e = PyMem_RawRealloc(c->entries, cap * sizeof(Entry));
        if (e == NULL)
            return 0;
        c->entries = e;
        c->entries_cap = cap;
    }
    uint32_t i = c->nentries++;
    c->entries[i] = (Entry){.sym = sym, .kind = kind};
    return i;
}

static void append(Converter *c, Frame *f, uint32_t e) {
    if (f->tail)
        c->entries[f->tail].next = e;
    else
        f->first = e;
    f->tail = e;
}

/* A string value (attribute or text) into the record's arena. */
static uint32_t string_entry(Converter *c, uint32_t sym, uint32_t kind, const char *s, size_t n) {
    uint32_t e = new_entry(c, sym, kind);
    if (e == 0)
        return 0;
    c->entries[e].off = c->strings.len;
    c->entries[e].len = n;
    if (buf_put(&c->strings, s, n) < 0)
        return 0;
    return e;
}

/* -- writing one record ------------------------------------------------------------ */

static int ensure_marks(Converter *c) {
    uint32_t need = c->symbols.count;
    if (need <= c->marks_cap)
        return 0;
    uint32_t cap = c->marks_cap ? c->marks_cap : 256;
    while (cap < need)
        cap *= 2;
    uint32_t *stamps = PyMem_RawCalloc(cap, sizeof(uint32_t));
    uint32_t *group_of = PyMem_RawCalloc(cap, sizeof(uint32_t));
    if (stamps == NULL || group_of == NULL) {
        PyMem_RawFree(stamps);
        PyMem_RawFree(group_of);
        return -1;
    }
    PyMem_RawFree(c->stamps);
    PyMem_RawFree(c->group_of);
    c->stamps = stamps;
    c->group_of = group_of;
    c->marks_cap = cap;
    c->stamp = 0;
    return 0;
}

static int write_value(Converter *c, Buf *b, uint32_t e);

static int write_item(Converter *c, Buf *b, uint32_t e) {
    Entry *x = &c->entries[e];
    if (x->kind == KIND_ELEM)
        return write_value(c, b, e);
    return put_json_string(b, c->strings.p + x->off, x->len);
}

/* Group an element's entries by key in order of first appearance; returns the base. */
static int group_entries(Converter *c, uint32_t first, uint32_t *base) {
    *base = c->ngroups;
    if (++c->stamp == 0) {
        memset(c->stamps, 0, c->marks_cap * sizeof(uint32_t));
        c->stamp = 1;
    }
    for (uint32_t x = first; x; x = c->entries[x].next) {
        uint32_t s = c->entries[x].sym;
        c->entries[x].gnext = 0;
        if (c->stamps[s] == c->stamp) {
            Group *g = &c->groups[c->group_of[s]];
            c->entries[g->tail].gnext = x;
            g->tail = x;
            g->count++;
            continue;
        }
        if (c->ngroups == c->groups_cap) {
            uint32_t cap = c->groups_cap ? c->groups_cap * 2 : 256;
            Group *g = PyMem_RawRealloc(c->groups, cap * sizeof(Group));
            if (g == NULL)
                return -1;
            c->groups = g;
            c->groups_cap = cap;
        }
        c->stamps[s] = c->stamp;
        c->group_of[s] = c->ngroups;
        c->groups[c->ngroups++] = (Group){x, x, 1, s};
    }
    return 0;
}

static int write_value(Converter *c, Buf *b, uint32_t e) {
    uint32_t first = c->entries[e].first;
    if (first == 0)
        return buf_put(b, "null", 4);
    Entry *f = &c->entries[first];
    if (f->kind == KIND_TEXT && f->next == 0)
        return put_json_string(b, c->strings.p + f->off, f->len);
    uint32_t base;
    if (group_entries(c, first, &base) < 0 || buf_byte(b, '{') < 0)
        return -1;
    uint32_t end = c->ngroups;
    for (uint32_t g = base; g < end; g++) {
        Group grp = c->groups[g];
        Sym *y = &c->symbols.syms[grp.sym];
        int list = grp.count > 1 || (y->forced && c->entries[grp.head].kind == KIND_ELEM);
        if ((g > base && buf_byte(b, ',') < 0) || buf_put(b, y->json, y->jsonlen) < 0)
            return -1;
        if (list && buf_byte(b, '[') < 0)
            return -1;
        for (uint32_t x = grp.head; x; x = c->entries[x].gnext) {
            if ((x != grp.head && buf_byte(b, ',') < 0) || write_item(c, b, x) < 0)
                return -1;
        }
        if (list && buf_byte(b, ']') < 0)
            return -1;
    }
    c->ngroups = base;
    return buf_byte(b, '}');
}

/* Append the finished record to this feed's output, beside records of the same name. */
static int emit(Converter *c, const char *name, size_t n, uint32_t e) {
    Segment *last = c->nsegments ? &c->segments[c->nsegments - 1] : NULL;
    int join = last != NULL && c->mode != MODE_SPLIT &&
               (c->mode == MODE_JSONL ||
                (last->name_len == n && !memcmp(c->names.p + last->name_off, name, n)));
    if (join) {
        if (c->mode == MODE_JSON && buf_byte(&c->out, ',') < 0)
            return -1;
    } else {
        if (c->nsegments == c->segments_cap) {
            Py_ssize_t cap = c->segments_cap ? c->segments_cap * 2 : 16;
            Segment *s = PyMem_RawRealloc(c->segments, (size_t)cap * sizeof(Segment));
            if (s == NULL)
                return -1;
            c->segments = s;
            c->segments_cap = cap;
        }
        last = &c->segments[c->nsegments++];
        last->name_off = c->names.len;
        last->name_len = n;
        last->data_off = c->out.len;
        last->count = 0;
        if (buf_put(&c->names, name, n) < 0)
            return -1;
    }
    if (ensure_marks(c) < 0 || write_value(c, &c->out, e) < 0)
        return -1;
    if (c->mode == MODE_JSONL && buf_byte(&c->out, '\n') < 0)
        return -1;
    last->count++;
    last->data_len = c->out.len - last->data_off;
    c->records++;
    return 0;
}

/* -- expat handlers ---------------------------------------------------------------- */

static int is_record_start(Converter *c, const char *name, size_t n) {
    Py_ssize_t d = c->depth;
    if (c->mode == MODE_JSON)
        return d == 2;
    if (c->record_path == Py_None) {
        if (d != 2)
            return 0;
        if (c->record_tag != Py_None && PyBytes_GET_SIZE(c->record_tag) == (Py_ssize_t)n &&
            !memcmp(PyBytes_AS_STRING(c->record_tag), name, n))
            return 1;
        c->skipped++;
        return 0;
    }
    Py_ssize_t plen = PyTuple_GET_SIZE(c->record_path);
    if (c->matched != d - 1 || d > plen)
        return 0;
    PyObject *want = PyTuple_GET_ITEM(c->record_path, d - 1);
    if (PyBytes_GET_SIZE(want) != (Py_ssize_t)n || memcmp(PyBytes_AS_STRING(want), name, n)) {
        if (d == plen)
            c->skipped++;
        return 0;
    }
    c->matched = d;
    return d == plen;
}

static void start_root(Converter *c, const char *name, const XML_Char **atts) {
    if (buf_put(&c->root_name, name, strlen(name)) < 0)
        return out_of_memory(c);
    for (int i = 0; atts[i]; i += 2) {
        if (c->root_attrs.len && buf_byte(&c->root_attrs, ',') < 0)
            return out_of_memory(c);
        long s = intern(c, &c->attr_prefix, atts[i], strlen(atts[i]));
        if (s < 0)
            return out_of_memory(c);
        Sym *y = &c->symbols.syms[s];
        if (buf_put(&c->root_attrs, y->json, y->jsonlen) < 0 ||
            put_json_string(&c->root_attrs, atts[i + 1], strlen(atts[i + 1])) < 0)
            return out_of_memory(c);
    }
}

static void start_record(Converter *c) {
    c->rec_depth = c->depth;
    c->nentries = 1; /* entry 0 means "none" */
    buf_trim(&c->strings, 16u << 20);
    if (c->symbols.count > SYMBOL_RESET) {
        symbols_clear(&c->symbols);
        c->text_sym = 0;
        long s = intern(c, NULL, c->text_key.p, c->text_key.len);
        if (s < 0)
            return out_of_memory(c);
        c->text_sym = (uint32_t)s;
    }
}

/* An element inside a record: its entry, then its attributes into its own list. */
static void open_element(Converter *c, const char *name, size_t n, const XML_Char **atts) {
    Frame *f = &c->frames[c->depth];
    long s = intern_name(c, name, n);
    uint32_t e = s < 0 ? 0 : new_entry(c, (uint32_t)s, KIND_ELEM);
    if (e == 0)
        return out_of_memory(c);
    f->entry = e;
    f->first = f->tail = 0;
    f->text.len = 0;
    for (int i = 0; atts[i]; i += 2) {
        long a = intern(c, &c->attr_prefix, atts[i], strlen(atts[i]));
        uint32_t x = a < 0 ? 0
                           : string_entry(c, (uint32_t)a, KIND_ATTR, atts[i + 1],
                                          strlen(atts[i + 1]));
        if (x == 0)
            return out_of_memory(c);
        append(c, f, x);
    }
}

static int check_attributes(Converter *c, const XML_Char **atts) {
    Py_ssize_t count = 0;
    for (; atts[2 * count]; count++) {
        size_t n = strlen(atts[2 * count]);
        if (count_name(c, atts[2 * count], n) < 0 || account(c, strlen(atts[2 * count + 1])) < 0)
            return -1;
    }
    if (count <= c->max_attributes)
        return 0;
    snprintf(c->error_buf, sizeof c->error_buf, "more than %zd attributes on one element",
             c->max_attributes);
    fail(c, c->error_buf);
    return -1;
}

static void peek_start(Converter *c, const char *name, size_t n) {
    if (c->depth != 2 || c->peek_repeated)
        return;
    uint32_t before = c->symbols.count;
    long s = intern(c, NULL, name, n);
    if (s < 0)
        return out_of_memory(c);
    if (c->symbols.count == before)
        c->peek_repeated = s + 1;
    else if (!c->peek_first)
        c->peek_first = s + 1;
}

static void XMLCALL on_start(void *data, const XML_Char *name, const XML_Char **atts) {
    Converter *c = data;
    size_t n = strlen(name);
    if (c->elements++ == 0)
        capi->SetDefaultHandlerExpand(c->parser, NULL);
    if (++c->depth > c->max_depth) {
        snprintf(c->error_buf, sizeof c->error_buf, "elements nested deeper than %zd levels",
                 c->max_depth);
        return fail(c, c->error_buf);
    }
    if (count_name(c, name, n) < 0 || account(c, n + ELEMENT_COST) < 0 ||
        check_attributes(c, atts) < 0)
        return;
    if (c->mode == MODE_PEEK)
        return peek_start(c, name, n);
    if (c->rec_depth == 0) {
        if (c->depth == 1 && c->mode == MODE_JSON)
            return start_root(c, name, atts);
        if (!is_record_start(c, name, n))
            return;
        start_record(c);
        if (c->error)
            return;
    }
    open_element(c, name, n, atts);
}

/* The joined text of the closing element, stripped, as its last entry. */
static void close_text(Converter *c, Frame *f) {
    const char *s = f->text.p;
    size_t n = f->text.len;
    if (n && c->strip_text)
        strip(&s, &n);
    if (n) {
        uint32_t x = string_entry(c, c->text_sym, KIND_TEXT, s, n);
        if (x == 0)
            return out_of_memory(c);
        append(c, f, x);
    }
    buf_trim(&f->text, 1u << 20);
}

static void XMLCALL on_end(void *data, const XML_Char *name) {
    Converter *c = data;
    Py_ssize_t d = c->depth--;
    if (c->matched >= d)
        c->matched = d - 1;
    if (c->rec_depth == 0 || c->mode == MODE_PEEK)
        return;
    Frame *f = &c->frames[d];
    close_text(c, f);
    if (c->error)
        return;
    uint32_t e = f->entry;
    c->entries[e].first = f->first;
    int empty = f->first == 0;
    if (d == c->rec_depth) {
        c->rec_depth = 0;
        if ((!empty || !c->drop_empty) && emit(c, name, strlen(name), e) < 0)
            out_of_memory(c);
        return;
    }
    if (!empty || !c->drop_empty)
        append(c, &c->frames[d - 1], e);
}

static void XMLCALL on_text(void *data, const XML_Char *s, int len) {
    Converter *c = data;
    if (account(c, (size_t)len) < 0)
        return;
    Buf *text;
    if (c->rec_depth)
        text = &c->frames[c->depth].text;
    else if (c->depth == 1 && c->mode == MODE_JSON)
        text = &c->root_text;
    else
        return;
    if (text == &c->root_text && text->len == 0 && c->strip_text) {
        const char *p = s;
        size_t n = (size_t)len;
        strip(&p, &n);
        if (n == 0)
            return; /* leading whitespace between records: never kept */
    }
    if ((Py_ssize_t)(text->len + (size_t)len) > c->max_text) {
        snprintf(c->error_buf, sizeof c->error_buf, "a text node is larger than %zd bytes",
                 c->max_text);
        return fail(c, c->error_buf);
    }
    if (buf_put(text, s, (size_t)len) < 0)
        out_of_memory(c);
}

/* The prolog's markup (no other handler takes it): entity and attribute-list
 * declarations turn expansion counting on, or fail with disable_entities. Removed at
 * the root's start tag, so content never comes here. */
static void XMLCALL on_default(void *data, const XML_Char *s, int len) {
    Converter *c = data;
    int entity = len >= 8 && !memcmp(s, "<!ENTITY", 8);
    if (entity && c->disable_entities)
        return fail(c, "the document declares an entity (entities are disabled: option "
                       "'disable_entities')");
    if (entity || (len >= 9 && !memcmp(s, "<!ATTLIST", 9)))
        c->counting = 1;
}

/* -- the Python type ------------------------------------------------------------------ */

static int make_parser(Converter *c, const char *encoding) {
    c->parser = capi->ParserCreate_MM(encoding, NULL, NULL);
    if (c->parser == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    capi->SetUserData(c->parser, c);
    capi->SetElementHandler(c->parser, on_start, on_end);
    capi->SetCharacterDataHandler(c->parser, on_text);
    capi->SetUnknownEncodingHandler(c->parser, capi->DefaultUnknownEncodingHandler, NULL);
    return 0;
}

static int copy_bytes(Buf *b, PyObject *o, const char *what) {
    if (!PyBytes_Check(o)) {
        PyErr_Format(PyExc_TypeError, "%s must be bytes", what);
        return -1;
    }
    if (buf_put(b, PyBytes_AS_STRING(o), (size_t)PyBytes_GET_SIZE(o)) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static int Converter_init(Converter *c, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"mode", "attr_prefix", "text_key", "strip_text", "drop_empty",
                             "force_list", "record_path", "record_tag", "encoding",
                             "disable_entities", "max_depth", "max_attributes", "max_name",
                             "max_text", NULL};
    PyObject *attr_prefix, *text_key, *force_list, *record_path, *record_tag;
    const char *encoding = NULL;
    int disable_entities = 0;
    if (c->parser != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Converter is already initialised");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iSSppO!OOzpnnnn", kwlist, &c->mode,
                                     &attr_prefix, &text_key, &c->strip_text, &c->drop_empty,
                                     &PyFrozenSet_Type, &force_list, &record_path, &record_tag,
                                     &encoding, &disable_entities, &c->max_depth,
                                     &c->max_attributes, &c->max_name, &c->max_text))
        return -1;
    if (c->mode < MODE_JSON || c->mode > MODE_PEEK || c->max_depth < 1) {
        PyErr_SetString(PyExc_ValueError, "bad mode or limits");
        return -1;
    }
    if (copy_bytes(&c->attr_prefix, attr_prefix, "attr_prefix") < 0 ||
        copy_bytes(&c->text_key, text_key, "text_key") < 0)
        return -1;
    if (record_path != Py_None && (!PyTuple_Check(record_path) || PyTuple_GET_SIZE(record_path) == 0)) {
        PyErr_SetString(PyExc_TypeError, "record_path must be a non-empty tuple of bytes or None");
        return -1;
    }
    for (Py_ssize_t i = 0; record_path != Py_None && i < PyTuple_GET_SIZE(record_path); i++) {
        if (!PyBytes_Check(PyTuple_GET_ITEM(record_path, i))) {
            PyErr_SetString(PyExc_TypeError, "record_path must hold bytes");
            return -1;
        }
    }
    if (record_tag != Py_None && !PyBytes_Check(record_tag)) {
        PyErr_SetString(PyExc_TypeError, "record_tag must be bytes or None");
        return -1;
    }
    c->force_list = Py_NewRef(force_list);
    c->record_path = Py_NewRef(record_path);
    c->record_tag = Py_NewRef(record_tag);
    c->frames = PyMem_RawCalloc((size_t)c->max_depth + 2, sizeof(Frame));
    if (c->frames == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    long s = intern(c, NULL, c->text_key.p, c->text_key.len);
    if (s < 0) {
        PyErr_NoMemory();
        return -1;
    }
    c->text_sym = (uint32_t)s;
    if (make_parser(c, encoding) < 0)
        return -1;
    c->disable_entities = disable_entities;
    capi->SetDefaultHandlerExpand(c->parser, on_default);
    return 0;
}

static void Converter_dealloc(Converter *c) {
    if (c->parser)
        capi->ParserFree(c->parser);
    Py_XDECREF(c->force_list);
    Py_XDECREF(c->record_path);
    Py_XDECREF(c->record_tag);
    if (c->frames) {
        for (Py_ssize_t i = 0; i < c->max_depth + 2; i++)
            buf_free(&c->frames[i].text);
        PyMem_RawFree(c->frames);
    }
    symbols_free(&c->symbols);
    Buf *bufs[] = {&c->attr_prefix, &c->text_key, &c->strings, &c->out, &c->names,
                   &c->root_name, &c->root_attrs, &c->root_text};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        buf_free(bufs[i]);
    PyMem_RawFree(c->entries);
    PyMem_RawFree(c->groups);
    PyMem_RawFree(c->stamps);
    PyMem_RawFree(c->group_of);
    PyMem_RawFree(c->segments);
    Py_TYPE(c)->tp_free((PyObject *)c);
}

static PyObject *raise_error(Converter *c) {
    PyErr_Clear(); /* pyexpat's unknown-encoding handler may have left a ValueError */
    PyObject *err = Py_BuildValue("(skk)", c->error, c->error_line, c->error_column);
    if (err != NULL) {
        PyErr_SetObject(ParseError, err);
        Py_DECREF(err);
    }
    return NULL;
}

static PyObject *raise_expat_error(Converter *c) {
    enum XML_Error code = capi->GetErrorCode(c->parser);
    c->error = capi->ErrorString(code);
    if (c->error == NULL)
        c->error = "not well-formed XML";
    c->error_line = (unsigned long)capi->GetErrorLineNumber(c->parser);
    c->error_column = (unsigned long)capi->GetErrorColumnNumber(c->parser) + 1;
    c->stopped = 1;
    return raise_error(c);
}

/* This feed's records as [(name, count, data)], then reset the output buffers. */
static PyObject *take_segments(Converter *c) {
    PyObject *list = PyList_New(c->nsegments);
    for (Py_ssize_t i = 0; list != NULL && i < c->nsegments; i++) {
        Segment *s = &c->segments[i];
        PyObject *item = Py_BuildValue("(y#ny#)", c->names.p + s->name_off,
                                       (Py_ssize_t)s->name_len, s->count, c->out.p + s->data_off,
                                       (Py_ssize_t)s->data_len);
        if (item == NULL)
            Py_CLEAR(list);
        else
            PyList_SET_ITEM(list, i, item);
    }
    c->nsegments = 0;
    buf_trim(&c->out, 4u << 20);
    buf_trim(&c->names, 1u << 20);
    return list;
}

static PyObject *Converter_feed(Converter *c, PyObject *args) {
    Py_buffer data;
    int final = 0;
    if (!PyArg_ParseTuple(args, "y*|p", &data, &final))
        return NULL;
    if (c->parser == NULL || c->stopped) {
        PyBuffer_Release(&data);
        if (c->error)
            return raise_error(c);
        PyErr_SetString(PyExc_RuntimeError, "the converter is finished");
        return NULL;
    }
    if (data.len > INT_MAX) {
        PyBuffer_Release(&data);
        PyErr_SetString(PyExc_ValueError, "chunk too large");
        return NULL;
    }
    c->fed += (unsigned long long)data.len;
    enum XML_Status status = capi->Parse(c->parser, data.buf, (int)data.len, final);
    PyBuffer_Release(&data);
    if (c->error)
        return raise_error(c);
    if (status != XML_STATUS_OK)
        return raise_expat_error(c);
    if (final)
        c->stopped = 1;
    return take_segments(c);
}

static PyObject *bytes_or_none(const Buf *b, int none_if_empty) {
    if (none_if_empty && b->len == 0)
        Py_RETURN_NONE;
    return PyBytes_FromStringAndSize(b->p, (Py_ssize_t)b->len);
}

/* The root of a json-mode document: (name, attribute members, text as JSON or None). */
static PyObject *Converter_root(Converter *c, PyObject *Py_UNUSED(ignored)) {
    const char *s = c->root_text.p;
    size_t n = c->root_text.len;
    if (n && c->strip_text)
        strip(&s, &n);
    Buf text = {0};
    if (n && put_json_string(&text, s, n) < 0)
        return PyErr_NoMemory();
    PyObject *result = Py_BuildValue("(NNN)", bytes_or_none(&c->root_name, 1),
                                     bytes_or_none(&c->root_attrs, 0), bytes_or_none(&text, 1));
    buf_free(&text);
    return result;
}

/* In peek mode: the root's first repeated child name, else its first child, else None. */
static PyObject *Converter_peeked(Converter *c, PyObject *Py_UNUSED(ignored)) {
    Py_ssize_t s = c->peek_repeated ? c->peek_repeated : c->peek_first;
    if (s == 0)
        Py_RETURN_NONE;
    Sym *y = &c->symbols.syms[s - 1];
    return PyBytes_FromStringAndSize(y->raw, (Py_ssize_t)y->rawlen);
}

static PyObject *Converter_stats(Converter *c, PyObject *Py_UNUSED(ignored)) {
    return Py_BuildValue("(nnn)", c->records, c->elements, c->skipped);
}

static PyMethodDef Converter_methods[] = {
    {"feed", (PyCFunction)Converter_feed, METH_VARARGS,
     "feed(data, final=False) -> [(name, count, data)]: parse a chunk, return its records."},
    {"root", (PyCFunction)Converter_root, METH_NOARGS,
     "root() -> (name, attribute members, text JSON or None) of a json-mode document."},
    {"peeked", (PyCFunction)Converter_peeked, METH_NOARGS,
     "peeked() -> the root's first repeated child name (peek mode)."},
    {"stats", (PyCFunction)Converter_stats, METH_NOARGS, "stats() -> (records, elements, skipped)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ConverterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "xmlflow.xml._native.Converter",
    .tp_basicsize = sizeof(Converter),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One XML document to JSON records, fed in chunks.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Converter_init,
    .tp_dealloc = (destructor)Converter_dealloc,
    .tp_methods = Converter_methods,
};

static PyObject *expat_version(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(ignored)) {
    return Py_BuildValue("(iii)", capi->MAJOR_VERSION, capi->MINOR_VERSION, capi->MICRO_VERSION);
}

static PyMethodDef module_methods[] = {
    {"expat_version", expat_version, METH_NOARGS,
     "expat_version() -> (major, minor, micro) of the expat behind pyexpat."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_native", "The native XML -> JSON core (see native.py).", -1,
    module_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__native(void) {
    init_escaped();
    capi = PyCapsule_Import(PyExpat_CAPSULE_NAME, 0);
    if (capi == NULL)
        return NULL;
    if (strcmp(capi->magic, PyExpat_CAPI_MAGIC) != 0 ||
        (size_t)capi->size < sizeof(struct PyExpat_CAPI)) {
        PyErr_SetString(PyExc_ImportError, "pyexpat's C API is not the expected version");
        return NULL;
    }
    if (PyType_Ready(&ConverterType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    ParseError = PyErr_NewException("xmlflow.xml._native.ParseError", PyExc_ValueError, NULL);
    if (ParseError == NULL || PyModule_AddObjectRef(m, "ParseError", ParseError) < 0 ||
        PyModule_AddObjectRef(m, "Converter", (PyObject *)&ConverterType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
