/*
 * archive._rows: the row join of archive.cells in C.
 *
 * encode(columns, rows, delimiter) -> bytes
 *
 * ``columns`` is a list with one item per column: None for a column whose cells are all
 * empty, or a pair (offsets, data) describing ``rows`` text cells the way an Arrow string
 * array does: ``offsets`` a buffer of rows + 1 native int32 values, ``data`` a buffer
 * holding the bytes from offsets[0] to offsets[rows] (so cell i is
 * data[offsets[i] - offsets[0] : offsets[i + 1] - offsets[0]]). The text is the cell's value
 * before CSV quoting (archive.cells.text_values); this module adds the quoting and the
 * separators.
 *
 * The rules are those of archive.cells.encode_rows: a cell is enclosed in '"', with inner
 * quotes doubled, when it holds the delimiter, a quote, CR or LF; cells are joined with the
 * delimiter; every row ends with LF; a row made of one empty cell is written as '""' so
 * that readers do not skip it as a blank line.
 *
 * The work is two passes without the GIL: the first finds, per column, the cells that need
 * quoting (a column whose bytes hold none of the four characters, the usual case, costs
 * four memchr calls) and so the exact output size; the second writes the rows into one
 * bytes object.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    Py_buffer offsets;
    Py_buffer data;
    int has_offsets;
    int has_data;
    const int32_t *off;
    const char *bytes;
    const char *bytes_end; /* the end of the readable data */
    /* Per row: 1 when the cell is enclosed in quotes (NULL when no cell is). */
    unsigned char *quoted;
} Column;

static void release_columns(Column *cols, Py_ssize_t count) {
    for (Py_ssize_t i = 0; i < count; i++) {
        if (cols[i].has_offsets) PyBuffer_Release(&cols[i].offsets);
        if (cols[i].has_data) PyBuffer_Release(&cols[i].data);
        free(cols[i].quoted);
    }
    PyMem_Free(cols);
}

/* Bytes that make a cell need quoting, for the delimiter in use. */
static void special_table(unsigned char table[256], unsigned char delimiter) {
    memset(table, 0, 256);
    table[(unsigned char)'"'] = 1;
    table[(unsigned char)'\n'] = 1;
    table[(unsigned char)'\r'] = 1;
    table[delimiter] = 1;
}

static int any_special(const char *bytes, size_t size, unsigned char delimiter) {
    return memchr(bytes, '"', size) != NULL || memchr(bytes, '\n', size) != NULL ||
           memchr(bytes, '\r', size) != NULL || memchr(bytes, delimiter, size) != NULL;
}

/*
 * Mark the cells of one column that need quoting; return the bytes quoting adds (two
 * quotes per enclosed cell plus one per inner quote), or -1 when out of memory.
 * ``lone`` is set for a file of one column, where an empty cell is written as '""'.
 */
static Py_ssize_t mark_column(Column *col, Py_ssize_t rows, const unsigned char *table,
                              unsigned char delimiter, int lone) {
    const int32_t *off = col->off;
    const char *base = col->bytes - off[0];
    size_t size = (size_t)(off[rows] - off[0]);
    int scan = size > 0 && any_special(col->bytes, size, delimiter);
    if (!scan && !lone) return 0;
    col->quoted = calloc((size_t)rows, 1);
    if (col->quoted == NULL) return -1;
    Py_ssize_t extra = 0;
    for (Py_ssize_t i = 0; i < rows; i++) {
        const unsigned char *p = (const unsigned char *)base + off[i];
        const unsigned char *end = (const unsigned char *)base + off[i + 1];
        if (p == end) {
            if (lone) {
                col->quoted[i] = 1;
                extra += 2;
            }
            continue;
        }
        if (!scan) continue;
        int hit = 0;
        Py_ssize_t quotes = 0;
        for (; p < end; p++) {
            if (table[*p]) {
                hit = 1;
                quotes += (*p == '"');
            }
        }
        if (hit) {
            col->quoted[i] = 1;
            extra += 2 + quotes;
        }
    }
    return extra;
}

static char *write_quoted(char *out, const char *p, const char *end) {
    *out++ = '"';
    for (;;) {
        const char *q = memchr(p, '"', (size_t)(end - p));
        if (q == NULL) break;
        size_t run = (size_t)(q - p) + 1;
        memcpy(out, p, run);
        out += run;
        *out++ = '"';
        p = q + 1;
    }
    memcpy(out, p, (size_t)(end - p));
    out += end - p;
    *out++ = '"';
    return out;
}

/* The output buffer holds SLACK bytes beyond the rows, so a short cell can be copied as
 * one fixed-size block (a single vector move) whatever its length: the bytes past its end
 * are overwritten by what follows. */
#define SLACK 16

static char *write_rows(char *out, Column *cols, Py_ssize_t ncols, Py_ssize_t rows,
                        char delimiter) {
    for (Py_ssize_t i = 0; i < rows; i++) {
        for (Py_ssize_t c = 0; c < ncols; c++) {
            if (c) *out++ = delimiter;
            const Column *col = &cols[c];
            if (col->off == NULL) continue;
            const char *base = col->bytes - col->off[0];
            const char *p = base + col->off[i];
            const char *end = base + col->off[i + 1];
            if (col->quoted != NULL && col->quoted[i]) {
                out = write_quoted(out, p, end);
                continue;
            }
            size_t len = (size_t)(end - p);
            if (len <= SLACK && p + SLACK <= col->bytes_end) {
                memcpy(out, p, SLACK);
            } else {
                memcpy(out, p, len);
            }
            out += len;
        }
        *out++ = '\n';
    }
    return out;
}

static int open_column(Column *col, PyObject *item, Py_ssize_t rows, Py_ssize_t index) {
    if (item == Py_None) return 0;
    if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2) {
        PyErr_Format(PyExc_TypeError, "column %zd: expected None or (offsets, data)", index);
        return -1;
    }
    if (PyObject_GetBuffer(PyTuple_GET_ITEM(item, 0), &col->offsets, PyBUF_C_CONTIGUOUS) < 0)
        return -1;
    col->has_offsets = 1;
    if (PyObject_GetBuffer(PyTuple_GET_ITEM(item, 1), &col->data, PyBUF_C_CONTIGUOUS) < 0)
        return -1;
    col->has_data = 1;
    if (col->offsets.len != (rows + 1) * (Py_ssize_t)sizeof(int32_t)) {
        PyErr_Format(PyExc_ValueError, "column %zd: offsets hold %zd bytes, expected %zd",
                     index, col->offsets.len, (rows + 1) * (Py_ssize_t)sizeof(int32_t));
        return -1;
    }
    col->off = (const int32_t *)col->offsets.buf;
    col->bytes = (const char *)col->data.buf;
    col->bytes_end = col->bytes + col->data.len;
    for (Py_ssize_t i = 0; i < rows; i++) {
        if (col->off[i + 1] < col->off[i]) {
            PyErr_Format(PyExc_ValueError, "column %zd: offsets decrease at row %zd", index, i);
            return -1;
        }
    }
    if ((Py_ssize_t)(col->off[rows] - col->off[0]) > col->data.len) {
        PyErr_Format(PyExc_ValueError, "column %zd: offsets run past the data", index);
        return -1;
    }
    return 0;
}

static PyObject *encode(PyObject *self, PyObject *args) {
    PyObject *columns;
    Py_ssize_t rows;
    int delimiter;
    (void)self;
    if (!PyArg_ParseTuple(args, "O!nC:encode", &PyList_Type, &columns, &rows, &delimiter))
        return NULL;
    if (rows < 0) {
        PyErr_SetString(PyExc_ValueError, "rows must not be negative");
        return NULL;
    }
    if (delimiter <= 0 || delimiter > 127 || delimiter == '"' || delimiter == '\n' ||
        delimiter == '\r') {
        PyErr_SetString(PyExc_ValueError, "the delimiter must be one ASCII character");
        return NULL;
    }
    Py_ssize_t ncols = PyList_GET_SIZE(columns);
    if (ncols == 0) return PyBytes_FromStringAndSize(NULL, 0);
    Column *cols = PyMem_Calloc((size_t)ncols, sizeof(Column));
    if (cols == NULL) return PyErr_NoMemory();
    for (Py_ssize_t c = 0; c < ncols; c++) {
        if (open_column(&cols[c], PyList_GET_ITEM(columns, c), rows, c) < 0) {
            release_columns(cols, ncols);
            return NULL;
        }
    }
    unsigned char table[256];
    special_table(table, (unsigned char)delimiter);
    Py_ssize_t total = rows * ncols; /* separators and line ends */
    int failed = 0;
    int lone = ncols == 1;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t c = 0; c < ncols && !failed; c++) {
        Column *col = &cols[c];
        if (col->off == NULL) {
            if (lone) total += 2 * rows; /* every row is one empty cell: '""' */
            continue;
        }
        Py_ssize_t extra = mark_column(col, rows, table, (unsigned char)delimiter, lone);
        if (extra < 0) {
            failed = 1;
            break;
        }
        total += (Py_ssize_t)(col->off[rows] - col->off[0]) + extra;
    }
    Py_END_ALLOW_THREADS
    if (failed) {
        release_columns(cols, ncols);
        return PyErr_NoMemory();
    }
    PyObject *result = PyBytes_FromStringAndSize(NULL, total + SLACK);
    if (result == NULL) {
        release_columns(cols, ncols);
        return NULL;
    }
    char *start = PyBytes_AS_STRING(result);
    char *end;
    Py_BEGIN_ALLOW_THREADS
    if (lone && cols[0].off == NULL) {
        end = start;
        for (Py_ssize_t i = 0; i < rows; i++) {
            memcpy(end, "\"\"\n", 3);
            end += 3;
        }
    } else {
        end = write_rows(start, cols, ncols, rows, (char)delimiter);
    }
    Py_END_ALLOW_THREADS
    release_columns(cols, ncols);
    if (end - start != total) {
        Py_DECREF(result);
        PyErr_Format(PyExc_SystemError, "wrote %zd bytes, expected %zd", (Py_ssize_t)(end - start),
                     total);
        return NULL;
    }
    if (_PyBytes_Resize(&result, total) < 0) return NULL;
    return result;
}


/* ---------------------------------------------------------------------------------------
 * split(offsets, data, keys, rows) -> list | None
 *
 * Verbatim terms out of JSON objects: ``offsets``/``data`` describe ``rows`` JSON texts as
 * for encode(); ``keys`` is a list of bytes (UTF-8 key names). Returns one item per key,
 * (offsets bytes, data bytes, validity bytes or None, null count), the buffers of an Arrow
 * string array holding each object's string value for that key (null where the object has
 * no such key). Returns None when any object is not what the store writes (a flat object
 * of string values, keys without escapes, each key once, no lone surrogate): the caller
 * then uses a general JSON reader for that batch.
 * ------------------------------------------------------------------------------------- */

typedef struct {
    char *buf;
    size_t len, cap;
    int32_t *off;
    unsigned char *valid;
    Py_ssize_t nulls;
    Py_ssize_t seen; /* last row (+1) in which the key was found */
    const char *name;
    Py_ssize_t name_len;
} Term;

/* A cheap hash of a key name: its length and its last eight bytes (term names share long
 * prefixes such as "dwc:" or "http://rs.tdwg.org/"; the table is probed with memcmp). */
static uint64_t key_hash(const char *p, size_t n) {
    uint64_t x = 0;
    size_t k = n < 8 ? n : 8;
    memcpy(&x, p + n - k, k);
    x ^= (uint64_t)n << 56;
    x *= 0x9E3779B97F4A7C15ULL;
    return x >> 20;
}

static int hex4(const unsigned char *p, const unsigned char *end, unsigned *out) {
    if (end - p < 4) return -1;
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = p[i], d;
        if (c >= '0' && c <= '9') d = c - '0';
        else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
        else return -1;
        v = (v << 4) | d;
    }
    *out = v;
    return 0;
}

/* Read a JSON string starting after its opening quote; append its text to ``out`` (may be
 * NULL to skip). Returns the position after the closing quote, or NULL if malformed. */
static const unsigned char *read_string(const unsigned char *p, const unsigned char *end,
                                        char *out, size_t *written) {
    size_t n = 0;
    while (p < end) {
        const unsigned char *run = p;
        while (p < end && *p != '"' && *p != '\\' && *p >= 0x20) p++;
        if (out) memcpy(out + n, run, (size_t)(p - run));
        n += (size_t)(p - run);
        if (p >= end || *p < 0x20) return NULL;
        if (*p == '"') {
            *written = n;
            return p + 1;
        }
        p++; /* backslash */
        if (p >= end) return NULL;
        unsigned char e = *p++;
        unsigned char c;
        switch (e) {
        case '"': c = '"'; break;
        case '\\': c = '\\'; break;
        case '/': c = '/'; break;
        case 'b': c = '\b'; break;
        case 'f': c = '\f'; break;
        case 'n': c = '\n'; break;
        case 'r': c = '\r'; break;
        case 't': c = '\t'; break;
        case 'u': {
            unsigned cp;
            if (hex4(p, end, &cp) < 0) return NULL;
            p += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                unsigned lo;
                if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || hex4(p + 2, end, &lo) < 0 ||
                    lo < 0xDC00 || lo > 0xDFFF)
                    return NULL;
                p += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                return NULL;
            }
            char u[4];
            size_t k;
            if (cp < 0x80) {
                u[0] = (char)cp;
                k = 1;
            } else if (cp < 0x800) {
                u[0] = (char)(0xC0 | (cp >> 6));
                u[1] = (char)(0x80 | (cp & 0x3F));
                k = 2;
            } else if (cp < 0x10000) {
                u[0] = (char)(0xE0 | (cp >> 12));
                u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
                u[2] = (char)(0x80 | (cp & 0x3F));
                k = 3;
            } else {
                u[0] = (char)(0xF0 | (cp >> 18));
                u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
                u[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
                u[3] = (char)(0x80 | (cp & 0x3F));
                k = 4;
            }
            if (out) memcpy(out + n, u, k);
            n += k;
            continue;
        }
        default:
            return NULL;
        }
        if (out) out[n] = (char)c;
        n++;
    }
    return NULL;
}

static const unsigned char *skip_ws(const unsigned char *p, const unsigned char *end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

typedef struct {
    Term *terms;
    Py_ssize_t nkeys;
    const Py_ssize_t *table;
    uint64_t mask;
    /* after[k]: the term that followed term k in the last object (index nkeys: the first
     * term of an object; nkeys + 1: after a key that is not a term). Objects written by one
     * ingest list their keys in the same order, so this guess is right almost always and
     * saves finding the key's end and hashing it. */
    Py_ssize_t *after;
} Lookup;

static Term *find_term(const Lookup *lk, const unsigned char *key, size_t key_len) {
    for (uint64_t slot = key_hash((const char *)key, key_len) & lk->mask;;
         slot = (slot + 1) & lk->mask) {
        Py_ssize_t k = lk->table[slot];
        if (k < 0) return NULL;
        Term *t = &lk->terms[k];
        if ((size_t)t->name_len == key_len && memcmp(t->name, key, key_len) == 0) return t;
    }
}

/* 1: parsed; 0: not a flat object of strings (the caller falls back); -1: out of memory. */
static int split_object(const unsigned char *p, const unsigned char *end, Lookup *lk,
                        Py_ssize_t row) {
    Term *terms = lk->terms;
    Py_ssize_t prev = lk->nkeys;
    p = skip_ws(p, end);
    if (p >= end || *p != '{') return 0;
    p = skip_ws(p + 1, end);
    if (p < end && *p == '}') return skip_ws(p + 1, end) == end;
    for (;;) {
        if (p >= end || *p != '"') return 0;
        const unsigned char *key = ++p;
        Term *term = NULL;
        Py_ssize_t guess = lk->after[prev];
        if (guess >= 0) {
            Term *t = &terms[guess];
            size_t n = (size_t)t->name_len;
            if ((size_t)(end - key) > n && key[n] == '"' && memcmp(t->name, key, n) == 0) {
                term = t;
                p = key + n;
            }
        }
        if (term == NULL) {
            const unsigned char *close = memchr(key, '"', (size_t)(end - key));
            if (close == NULL) return 0;
            for (const unsigned char *q = key; q < close; q++) {
                if (*q == '\\' || *q < 0x20) return 0; /* escaped keys: the fallback's */
            }
            p = close;
            term = find_term(lk, key, (size_t)(close - key));
            Py_ssize_t index = term == NULL ? lk->nkeys + 1 : term - terms;
            lk->after[prev] = term == NULL ? -1 : index;
        }
        prev = term == NULL ? lk->nkeys + 1 : term - terms;
        p = skip_ws(p + 1, end);
        if (p >= end || *p != ':') return 0;
        p = skip_ws(p + 1, end);
        if (p >= end || *p != '"') return 0;
        p++;
        size_t n = 0;
        if (term != NULL) {
            if (term->seen == row + 1) return 0; /* a key twice */
            size_t room = (size_t)(end - p);
            if (term->len + room > term->cap) {
                size_t cap = term->cap * 2 > term->len + room ? term->cap * 2 : term->len + room;
                char *grown = realloc(term->buf, cap);
                if (grown == NULL) return -1;
                term->buf = grown;
                term->cap = cap;
            }
            p = read_string(p, end, term->buf + term->len, &n);
            if (p == NULL) return 0;
            term->len += n;
            term->seen = row + 1;
        } else {
            p = read_string(p, end, NULL, &n);
            if (p == NULL) return 0;
        }
        p = skip_ws(p, end);
        if (p < end && *p == ',') {
            p = skip_ws(p + 1, end);
            continue;
        }
        if (p < end && *p == '}') return skip_ws(p + 1, end) == end;
        return 0;
    }
}

static void free_terms(Term *terms, Py_ssize_t count) {
    for (Py_ssize_t k = 0; k < count; k++) {
        free(terms[k].buf);
        free(terms[k].off);
        free(terms[k].valid);
    }
    PyMem_Free(terms);
}

static PyObject *split(PyObject *self, PyObject *args) {
    PyObject *offsets_obj, *data_obj, *keys;
    Py_ssize_t rows;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOO!n:split", &offsets_obj, &data_obj, &PyList_Type, &keys,
                          &rows))
        return NULL;
    if (rows < 0) {
        PyErr_SetString(PyExc_ValueError, "rows must not be negative");
        return NULL;
    }
    Column col;
    memset(&col, 0, sizeof col);
    PyObject *pair = PyTuple_Pack(2, offsets_obj, data_obj);
    if (pair == NULL) return NULL;
    int opened = open_column(&col, pair, rows, 0);
    Py_DECREF(pair);
    if (opened < 0) {
        if (col.has_offsets) PyBuffer_Release(&col.offsets);
        if (col.has_data) PyBuffer_Release(&col.data);
        return NULL;
    }
    Py_ssize_t nkeys = PyList_GET_SIZE(keys);
    Term *terms = PyMem_Calloc((size_t)(nkeys ? nkeys : 1), sizeof(Term));
    uint64_t size = 8;
    while (size < (uint64_t)nkeys * 2) size <<= 1;
    Py_ssize_t *table = PyMem_Malloc(size * sizeof(Py_ssize_t));
    Py_ssize_t *after = PyMem_Malloc(((size_t)nkeys + 2) * sizeof(Py_ssize_t));
    PyObject *result = NULL;
    int status = 1;
    if (terms == NULL || table == NULL || after == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (uint64_t i = 0; i < size; i++) table[i] = -1;
    for (Py_ssize_t i = 0; i < nkeys + 2; i++) after[i] = -1;
    Lookup lookup = {terms, nkeys, table, size - 1, after};
    size_t total = (size_t)(col.off[rows] - col.off[0]);
    for (Py_ssize_t k = 0; k < nkeys; k++) {
        PyObject *key = PyList_GET_ITEM(keys, k);
        if (!PyBytes_Check(key)) {
            PyErr_Format(PyExc_TypeError, "key %zd is not bytes", k);
            goto done;
        }
        Term *t = &terms[k];
        t->name = PyBytes_AS_STRING(key);
        t->name_len = PyBytes_GET_SIZE(key);
        uint64_t slot = key_hash(t->name, (size_t)t->name_len) & (size - 1);
        while (table[slot] >= 0) {
            Term *other = &terms[table[slot]];
            if (other->name_len == t->name_len && memcmp(other->name, t->name, (size_t)t->name_len) == 0) {
                PyErr_Format(PyExc_ValueError, "key %zd is given twice", k);
                goto done;
            }
            slot = (slot + 1) & (size - 1);
        }
        table[slot] = k;
        t->cap = total / (size_t)nkeys + 64;
        t->buf = malloc(t->cap);
        t->off = calloc((size_t)rows + 1, sizeof(int32_t));
        t->valid = calloc(((size_t)rows + 7) / 8 + 1, 1);
        if (t->buf == NULL || t->off == NULL || t->valid == NULL) {
            PyErr_NoMemory();
            goto done;
        }
    }
    Py_BEGIN_ALLOW_THREADS
    const char *base = col.bytes - col.off[0];
    for (Py_ssize_t i = 0; i < rows && status == 1; i++) {
        const unsigned char *p = (const unsigned char *)base + col.off[i];
        const unsigned char *e = (const unsigned char *)base + col.off[i + 1];
        status = split_object(p, e, &lookup, i);
        for (Py_ssize_t k = 0; k < nkeys && status == 1; k++) {
            Term *t = &terms[k];
            if (t->len > (size_t)INT32_MAX) {
                status = 0;
                break;
            }
            t->off[i + 1] = (int32_t)t->len;
            if (t->seen == i + 1) t->valid[i >> 3] |= (unsigned char)(1u << (i & 7));
            else t->nulls++;
        }
    }
    Py_END_ALLOW_THREADS
    if (status < 0) {
        PyErr_NoMemory();
        goto done;
    }
    if (status == 0) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    result = PyList_New(nkeys);
    if (result == NULL) goto done;
    for (Py_ssize_t k = 0; k < nkeys; k++) {
        Term *t = &terms[k];
        PyObject *item;
        if (t->nulls) {
            item = Py_BuildValue("(y#y#y#n)", (const char *)t->off, (Py_ssize_t)((rows + 1) * 4),
                                 t->buf, (Py_ssize_t)t->len, (const char *)t->valid,
                                 (Py_ssize_t)((rows + 7) / 8), t->nulls);
        } else {
            item = Py_BuildValue("(y#y#On)", (const char *)t->off, (Py_ssize_t)((rows + 1) * 4),
                                 t->buf, (Py_ssize_t)t->len, Py_None, (Py_ssize_t)0);
        }
        if (item == NULL) {
            Py_CLEAR(result);
            goto done;
        }
        PyList_SET_ITEM(result, k, item);
    }
done:
    if (terms != NULL) free_terms(terms, nkeys);
    PyMem_Free(table);
    PyMem_Free(after);
    PyBuffer_Release(&col.offsets);
    PyBuffer_Release(&col.data);
    return result;
}

static PyMethodDef methods[] = {
    {"encode", encode, METH_VARARGS,
     "encode(columns, rows, delimiter) -> bytes\n\n"
     "CSV/TSV rows from text columns given as None (all empty) or (offsets, data)."},
    {"split", split, METH_VARARGS,
     "split(offsets, data, keys, rows) -> list | None\n\n"
     "The string value of each key in each JSON object, as Arrow string buffers."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_rows", "Row join and verbatim-term split in C.", -1, methods,
};

PyMODINIT_FUNC PyInit__rows(void) { return PyModule_Create(&module); }
