/*
 * archive._rows: the hot loops of an archive build in C.
 *
 * encode(columns, rows, delimiter) -> bytes
 *
 * The rows of a batch as CSV/TSV bytes, by the rules of archive.cells: a cell is enclosed
 * in '"', with inner quotes doubled, when it holds the delimiter, a quote, CR or LF; cells
 * are joined with the delimiter; every row ends with LF; a row made of one empty cell is
 * written as '""' so that readers do not skip it as a blank line; nulls are empty cells.
 * ``columns`` has one item per column, describing Arrow buffers:
 *
 *   None                                    every cell empty
 *   (TEXT, offsets, data, valid, bit)       text cells: ``offsets`` rows + 1 int32,
 *                                           ``data`` the bytes from offsets[0] on
 *   (LIST, offsets, valid, bit, item_offsets, item_data, item_valid, item_bit)
 *                                           lists of strings, written as JSON arrays
 *                                           (json.dumps with ensure_ascii=False); list i
 *                                           holds items offsets[i] to offsets[i + 1] of
 *                                           the item array, whose item k is
 *                                           item_data[item_offsets[k] - item_offsets[0]...]
 *   (TIME, values, valid, bit)              int64 microseconds since 1970 (UTC, years 1 to
 *                                           9999), written as datetime.isoformat() +00:00
 *
 * where ``valid`` is an Arrow validity bitmap (or None: no nulls) and ``bit`` the index of
 * the column's first row in it. Text and list items must be UTF-8: when a cell is not,
 * UnicodeError("invalid UTF-8", column, row) is raised.
 *
 * The work is two passes without the GIL: the first measures every cell and finds those
 * that need quoting (a text column whose bytes hold none of the four characters, the usual
 * case, costs four memchr calls), so the output is allocated once at its exact size; the
 * second writes the rows.
 *
 * split(offsets, data, keys, rows) -> list | None: see below.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { KIND_TEXT = 0, KIND_LIST = 1, KIND_TIME = 2 };

#define MAX_VIEWS 6

typedef struct {
    int kind; /* -1: every cell empty */
    Py_buffer views[MAX_VIEWS];
    int nviews;
    const uint8_t *valid;
    Py_ssize_t bit;
    /* text */
    const int32_t *off;
    const char *bytes;
    const char *bytes_end; /* the end of the readable data */
    /* lists of strings */
    const int32_t *item_off;
    const char *item_bytes;
    const uint8_t *item_valid;
    Py_ssize_t item_bit;
    Py_ssize_t items;
    /* timestamps */
    const int64_t *micros;
    /* Per row: 1 when the cell is enclosed in quotes (NULL when no cell is). */
    unsigned char *quoted;
} Column;

static void release_columns(Column *cols, Py_ssize_t count) {
    for (Py_ssize_t i = 0; i < count; i++) {
        for (int v = 0; v < cols[i].nviews; v++) PyBuffer_Release(&cols[i].views[v]);
        free(cols[i].quoted);
    }
    PyMem_Free(cols);
}

static inline int is_valid(const uint8_t *valid, Py_ssize_t bit) {
    return valid == NULL || ((valid[bit >> 3] >> (bit & 7)) & 1);
}

static inline int text_valid(const Column *col, Py_ssize_t i) {
    return is_valid(col->valid, col->bit + i);
}

/* Whether bytes are valid UTF-8 (RFC 3629: no overlongs, surrogates or code points past
 * U+10FFFF), eight ASCII bytes at a time where it can. */
static int utf8_ok(const unsigned char *p, const unsigned char *end) {
    while (p < end) {
        if (end - p >= 8) {
            uint64_t chunk;
            memcpy(&chunk, p, 8);
            if ((chunk & 0x8080808080808080ULL) == 0) {
                p += 8;
                continue;
            }
        }
        unsigned char c = *p;
        if (c < 0x80) {
            p++;
            continue;
        }
        Py_ssize_t need;
        unsigned char lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) need = 1;
        else if (c == 0xE0) need = 2, lo = 0xA0;
        else if (c == 0xED) need = 2, hi = 0x9F;
        else if (c >= 0xE1 && c <= 0xEF) need = 2;
        else if (c == 0xF0) need = 3, lo = 0x90;
        else if (c == 0xF4) need = 3, hi = 0x8F;
        else if (c >= 0xF1 && c <= 0xF3) need = 3;
        else return 0;
        if (end - p <= need) return 0;
        if (p[1] < lo || p[1] > hi) return 0;
        for (Py_ssize_t k = 2; k <= need; k++) {
            if ((p[k] & 0xC0) != 0x80) return 0;
        }
        p += need + 1;
    }
    return 1;
}

static int all_ascii(const unsigned char *p, size_t n) {
    size_t k = 0;
    uint64_t acc = 0;
    for (; k + 8 <= n; k += 8) {
        uint64_t chunk;
        memcpy(&chunk, p + k, 8);
        acc |= chunk;
    }
    for (; k < n; k++) acc |= p[k];
    return (acc & 0x8080808080808080ULL) == 0;
}

/* -1 when every valid cell of a text column (or every item of a list column) is UTF-8,
 * else the first row holding one that is not. */
static Py_ssize_t first_bad_utf8(const Column *col, Py_ssize_t rows) {
    const int32_t *off = col->kind == KIND_LIST ? col->item_off : col->off;
    const char *bytes = col->kind == KIND_LIST ? col->item_bytes : col->bytes;
    Py_ssize_t count = col->kind == KIND_LIST ? col->items : rows;
    const unsigned char *base = (const unsigned char *)bytes - off[0];
    if (all_ascii((const unsigned char *)bytes, (size_t)(off[count] - off[0]))) return -1;
    for (Py_ssize_t i = 0; i < rows; i++) {
        if (!text_valid(col, i)) continue;
        Py_ssize_t first = col->kind == KIND_LIST ? col->off[i] : i;
        Py_ssize_t last = col->kind == KIND_LIST ? col->off[i + 1] : i + 1;
        for (Py_ssize_t k = first; k < last; k++) {
            if (col->kind == KIND_LIST && !is_valid(col->item_valid, col->item_bit + k)) continue;
            if (!utf8_ok(base + off[k], base + off[k + 1])) return i;
        }
    }
    return -1;
}

/* Bytes that make a text cell need quoting, for the delimiter in use. */
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

/* Bytes a list item takes in its cell: JSON escapes, then the quotes doubled (the cell of
 * a list holding a string is always enclosed). */
static unsigned char item_width[256];

static void init_item_width(void) {
    for (int c = 0; c < 256; c++) item_width[c] = 1;
    for (int c = 0; c < 0x20; c++) item_width[c] = 6; /* \u00XX */
    item_width['\b'] = item_width['\t'] = item_width['\n'] = item_width['\f'] =
        item_width['\r'] = 2;
    item_width['"'] = 3;  /* \"" */
    item_width['\\'] = 2; /* \\ */
}

/* Days since 1970-01-01 to a civil date (H. Hinnant's algorithm). */
static void civil_from_days(int64_t z, int *year, unsigned *month, unsigned *day) {
    z += 719468;
    const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    const unsigned doe = (unsigned)(z - era * 146097);
    const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    const int64_t y = (int64_t)yoe + era * 400;
    const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const unsigned mp = (5 * doy + 2) / 153;
    *day = doy - (153 * mp + 2) / 5 + 1;
    *month = mp < 10 ? mp + 3 : mp - 9;
    *year = (int)(y + (*month <= 2));
}

static const int64_t DAY_MICROS = 86400LL * 1000000LL;

static inline size_t time_width(int64_t v) {
    return v % 1000000 != 0 ? 32 : 25; /* 2020-01-02T03:04:05[.000120]+00:00 */
}

static inline char *put_digits(char *out, unsigned value, int width) {
    for (int k = width - 1; k >= 0; k--) {
        out[k] = (char)('0' + value % 10);
        value /= 10;
    }
    return out + width;
}

static char *write_time(char *out, int64_t v) {
    int64_t days = v / DAY_MICROS, rem = v % DAY_MICROS;
    if (rem < 0) {
        rem += DAY_MICROS;
        days -= 1;
    }
    int year;
    unsigned month, day;
    civil_from_days(days, &year, &month, &day);
    unsigned secs = (unsigned)(rem / 1000000), micros = (unsigned)(rem % 1000000);
    out = put_digits(out, (unsigned)year, 4);
    *out++ = '-';
    out = put_digits(out, month, 2);
    *out++ = '-';
    out = put_digits(out, day, 2);
    *out++ = 'T';
    out = put_digits(out, secs / 3600, 2);
    *out++ = ':';
    out = put_digits(out, secs / 60 % 60, 2);
    *out++ = ':';
    out = put_digits(out, secs % 60, 2);
    if (micros) {
        *out++ = '.';
        out = put_digits(out, micros, 6);
    }
    memcpy(out, "+00:00", 6);
    return out + 6;
}

/* The bytes of list i's cell, and whether it is enclosed. */
static size_t list_width(const Column *col, Py_ssize_t i, unsigned char delimiter,
                         int *enclosed) {
    Py_ssize_t first = col->off[i], last = col->off[i + 1];
    Py_ssize_t n = last - first;
    size_t width = 2 + (n > 1 ? 2 * (size_t)(n - 1) : 0); /* [] and ", " between items */
    int strings = 0;
    const char *base = col->item_bytes - col->item_off[0];
    for (Py_ssize_t k = first; k < last; k++) {
        if (!is_valid(col->item_valid, col->item_bit + k)) {
            width += 4; /* null */
            continue;
        }
        strings = 1;
        width += 4; /* ""..."" */
        const unsigned char *p = (const unsigned char *)base + col->item_off[k];
        const unsigned char *end = (const unsigned char *)base + col->item_off[k + 1];
        for (; p < end; p++) width += item_width[*p];
    }
    /* Text without a string item has no quote: "[null, null]" is enclosed only when the
     * delimiter is one of its characters. */
    *enclosed = strings || (n > 0 && (delimiter == 'n' || delimiter == 'u' || delimiter == 'l')) ||
                (n > 1 && (delimiter == ',' || delimiter == ' '));
    return width + (*enclosed ? 2 : 0);
}

static const char HEX[] = "0123456789abcdef";

static char *write_list(char *out, const Column *col, Py_ssize_t i, int enclosed) {
    Py_ssize_t first = col->off[i], last = col->off[i + 1];
    const char *base = col->item_bytes - col->item_off[0];
    if (enclosed) *out++ = '"';
    *out++ = '[';
    for (Py_ssize_t k = first; k < last; k++) {
        if (k > first) {
            *out++ = ',';
            *out++ = ' ';
        }
        if (!is_valid(col->item_valid, col->item_bit + k)) {
            memcpy(out, "null", 4);
            out += 4;
            continue;
        }
        *out++ = '"';
        *out++ = '"';
        const unsigned char *p = (const unsigned char *)base + col->item_off[k];
        const unsigned char *end = (const unsigned char *)base + col->item_off[k + 1];
        for (; p < end; p++) {
            unsigned char c = *p;
            if (item_width[c] == 1) {
                *out++ = (char)c;
                continue;
            }
            *out++ = '\\';
            switch (c) {
            case '"': *out++ = '"'; *out++ = '"'; break;
            case '\\': *out++ = '\\'; break;
            case '\b': *out++ = 'b'; break;
            case '\t': *out++ = 't'; break;
            case '\n': *out++ = 'n'; break;
            case '\f': *out++ = 'f'; break;
            case '\r': *out++ = 'r'; break;
            default:
                memcpy(out, "u00", 3);
                out[3] = HEX[c >> 4];
                out[4] = HEX[c & 15];
                out += 5;
            }
        }
        *out++ = '"';
        *out++ = '"';
    }
    *out++ = ']';
    if (enclosed) *out++ = '"';
    return out;
}

/*
 * Measure one column: mark the cells to enclose and return the bytes of all its cells, or
 * -1 when out of memory. ``lone`` is set for a file of one column, where an empty cell is
 * written as '""'.
 */
static Py_ssize_t measure_column(Column *col, Py_ssize_t rows, const unsigned char *table,
                                 unsigned char delimiter, int lone) {
    Py_ssize_t total = 0;
    if (rows <= 0) return 0;
    if (col->kind == KIND_TIME) {
        for (Py_ssize_t i = 0; i < rows; i++) {
            if (text_valid(col, i)) total += (Py_ssize_t)time_width(col->micros[i]);
            else if (lone) total += 2;
        }
        if (lone) {
            col->quoted = calloc((size_t)rows, 1);
            if (col->quoted == NULL) return -1;
            for (Py_ssize_t i = 0; i < rows; i++) col->quoted[i] = !text_valid(col, i);
        }
        return total;
    }
    if (col->kind == KIND_LIST) {
        col->quoted = calloc((size_t)rows, 1);
        if (col->quoted == NULL) return -1;
        for (Py_ssize_t i = 0; i < rows; i++) {
            if (!text_valid(col, i)) {
                if (lone) {
                    col->quoted[i] = 1;
                    total += 2;
                }
                continue;
            }
            int enclosed;
            total += (Py_ssize_t)list_width(col, i, delimiter, &enclosed);
            col->quoted[i] = (unsigned char)enclosed;
        }
        return total;
    }
    const int32_t *off = col->off;
    const char *base = col->bytes - off[0];
    size_t size = (size_t)(off[rows] - off[0]);
    int scan = size > 0 && any_special(col->bytes, size, delimiter);
    if (col->valid == NULL) total = (Py_ssize_t)size;
    if (!scan && !lone && col->valid == NULL) return total;
    if (scan || lone) {
        col->quoted = calloc((size_t)rows, 1);
        if (col->quoted == NULL) return -1;
    }
    for (Py_ssize_t i = 0; i < rows; i++) {
        int valid = text_valid(col, i);
        const unsigned char *p = (const unsigned char *)base + off[i];
        const unsigned char *end = valid ? (const unsigned char *)base + off[i + 1] : p;
        if (col->valid != NULL) total += end - p;
        if (p == end) {
            if (lone) {
                col->quoted[i] = 1;
                total += 2;
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
            total += 2 + quotes;
        }
    }
    return total;
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
            if (col->kind < 0) continue;
            int quoted = col->quoted != NULL && col->quoted[i];
            if (!text_valid(col, i)) {
                if (quoted) { /* a lone empty cell */
                    *out++ = '"';
                    *out++ = '"';
                }
                continue;
            }
            if (col->kind == KIND_TIME) {
                out = write_time(out, col->micros[i]);
                continue;
            }
            if (col->kind == KIND_LIST) {
                out = write_list(out, col, i, quoted);
                continue;
            }
            const char *base = col->bytes - col->off[0];
            const char *p = base + col->off[i];
            const char *end = base + col->off[i + 1];
            if (quoted) {
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

/* A buffer of at least ``need`` bytes from ``obj`` (None: NULL), kept in the column. */
static int view(Column *col, PyObject *obj, Py_ssize_t need, const void **out,
                Py_ssize_t *len, Py_ssize_t index, const char *what) {
    *out = NULL;
    if (len) *len = 0;
    if (obj == Py_None) return 0;
    if (col->nviews == MAX_VIEWS) {
        PyErr_Format(PyExc_ValueError, "column %zd: too many buffers", index);
        return -1;
    }
    Py_buffer *b = &col->views[col->nviews];
    if (PyObject_GetBuffer(obj, b, PyBUF_C_CONTIGUOUS) < 0) return -1;
    col->nviews++;
    if (b->len < need) {
        PyErr_Format(PyExc_ValueError, "column %zd: %s hold %zd bytes, expected %zd", index,
                     what, b->len, need);
        return -1;
    }
    *out = b->buf;
    if (len) *len = b->len;
    return 0;
}

static int check_offsets(const int32_t *off, Py_ssize_t count, Py_ssize_t data_len,
                         Py_ssize_t index) {
    for (Py_ssize_t i = 0; i < count; i++) {
        if (off[i + 1] < off[i]) {
            PyErr_Format(PyExc_ValueError, "column %zd: offsets decrease at row %zd", index, i);
            return -1;
        }
    }
    if ((Py_ssize_t)(off[count] - off[0]) > data_len) {
        PyErr_Format(PyExc_ValueError, "column %zd: offsets run past the data", index);
        return -1;
    }
    return 0;
}

static int open_column(Column *col, PyObject *item, Py_ssize_t rows, Py_ssize_t index) {
    col->kind = -1;
    if (item == Py_None) return 0;
    Py_ssize_t size = PyTuple_Check(item) ? PyTuple_GET_SIZE(item) : 0;
    long kind = size ? PyLong_AsLong(PyTuple_GET_ITEM(item, 0)) : -1;
    if (kind == -1 && PyErr_Occurred()) PyErr_Clear();
    Py_ssize_t expected = kind == KIND_TEXT ? 5 : kind == KIND_LIST ? 8 : kind == KIND_TIME ? 4 : -1;
    if (expected < 0 || size != expected) {
        PyErr_Format(PyExc_TypeError, "column %zd: expected None or a (kind, buffers...) tuple",
                     index);
        return -1;
    }
    col->kind = (int)kind;
    PyObject *const *a = &PyTuple_GET_ITEM(item, 0);
    const void *ptr;
    Py_ssize_t len;
    Py_ssize_t valid_at = kind == KIND_TEXT ? 3 : 2;
    col->bit = PyLong_AsSsize_t(a[valid_at + 1]);
    if (col->bit < 0) {
        if (!PyErr_Occurred()) PyErr_Format(PyExc_ValueError, "column %zd: negative bit", index);
        return -1;
    }
    if (kind == KIND_TEXT) {
        if (view(col, a[1], (rows + 1) * 4, &ptr, NULL, index, "offsets") < 0) return -1;
        if (ptr == NULL) goto missing;
        col->off = ptr;
        if (view(col, a[2], 0, &ptr, &len, index, "data") < 0) return -1;
        col->bytes = ptr ? ptr : "";
        col->bytes_end = col->bytes + len;
        if (check_offsets(col->off, rows, len, index) < 0) return -1;
    } else if (kind == KIND_LIST) {
        if (view(col, a[1], (rows + 1) * 4, &ptr, NULL, index, "offsets") < 0) return -1;
        if (ptr == NULL) goto missing;
        col->off = ptr;
        for (Py_ssize_t i = 0; i < rows; i++) {
            if (col->off[i + 1] < col->off[i] || col->off[i] < 0) {
                PyErr_Format(PyExc_ValueError, "column %zd: offsets decrease at row %zd", index, i);
                return -1;
            }
        }
        col->items = col->off[rows];
        col->item_bit = PyLong_AsSsize_t(a[7]);
        if (col->item_bit < 0) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_ValueError, "column %zd: negative bit", index);
            return -1;
        }
        if (view(col, a[4], (col->items + 1) * 4, &ptr, NULL, index, "item offsets") < 0)
            return -1;
        if (ptr == NULL) goto missing;
        col->item_off = ptr;
        if (view(col, a[5], 0, &ptr, &len, index, "item data") < 0) return -1;
        col->item_bytes = ptr ? ptr : "";
        if (check_offsets(col->item_off, col->items, len, index) < 0) return -1;
        if (view(col, a[6], (col->item_bit + col->items + 7) / 8, &ptr, NULL, index,
                 "item validity") < 0)
            return -1;
        col->item_valid = ptr;
    } else {
        if (view(col, a[1], rows * 8, &ptr, NULL, index, "values") < 0) return -1;
        if (ptr == NULL && rows) goto missing;
        col->micros = ptr;
    }
    if (view(col, a[valid_at], (col->bit + rows + 7) / 8, &ptr, NULL, index, "validity") < 0)
        return -1;
    col->valid = ptr;
    if (kind == KIND_TIME) {
        for (Py_ssize_t i = 0; i < rows; i++) {
            /* 0001-01-01T00:00:00 to 9999-12-31T23:59:59.999999 */
            if (text_valid(col, i) &&
                (col->micros[i] < -62135596800000000LL || col->micros[i] > 253402300799999999LL)) {
                PyErr_Format(PyExc_ValueError, "column %zd: row %zd is outside years 1 to 9999",
                             index, i);
                return -1;
            }
        }
    }
    return 0;
missing:
    PyErr_Format(PyExc_ValueError, "column %zd: a buffer is missing", index);
    return -1;
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
        delimiter == '\r' || delimiter == '[' || delimiter == ']' || delimiter == '\\') {
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
    Py_ssize_t bad_column = -1, bad_row = -1;
    int lone = ncols == 1;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t c = 0; c < ncols && !failed; c++) {
        Column *col = &cols[c];
        if (col->kind < 0) {
            if (lone) total += 2 * rows; /* every row is one empty cell: '""' */
            continue;
        }
        if (col->kind != KIND_TIME && (bad_row = first_bad_utf8(col, rows)) >= 0) {
            bad_column = c;
            break;
        }
        Py_ssize_t width = measure_column(col, rows, table, (unsigned char)delimiter, lone);
        if (width < 0) {
            failed = 1;
            break;
        }
        total += width;
    }
    Py_END_ALLOW_THREADS
    if (bad_column >= 0) {
        release_columns(cols, ncols);
        PyObject *error = Py_BuildValue("(snn)", "invalid UTF-8", bad_column, bad_row);
        if (error != NULL) {
            PyErr_SetObject(PyExc_UnicodeError, error);
            Py_DECREF(error);
        }
        return NULL;
    }
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
    if (lone && cols[0].kind < 0) {
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
    PyObject *kind = PyLong_FromLong(KIND_TEXT), *zero = PyLong_FromLong(0);
    PyObject *spec = kind && zero ? PyTuple_Pack(5, kind, offsets_obj, data_obj, Py_None, zero)
                                  : NULL;
    Py_XDECREF(kind);
    Py_XDECREF(zero);
    if (spec == NULL) return NULL;
    int opened = open_column(&col, spec, rows, 0);
    Py_DECREF(spec);
    if (opened < 0) {
        for (int v = 0; v < col.nviews; v++) PyBuffer_Release(&col.views[v]);
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
    for (int v = 0; v < col.nviews; v++) PyBuffer_Release(&col.views[v]);
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

PyMODINIT_FUNC PyInit__rows(void) {
    init_item_width();
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddIntConstant(m, "TEXT", KIND_TEXT) < 0 ||
        PyModule_AddIntConstant(m, "LIST", KIND_LIST) < 0 ||
        PyModule_AddIntConstant(m, "TIME", KIND_TIME) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
