/*
 * The compiled kernel of bncli: the hot loops of the block reductions, in plain C.
 *
 * It takes contiguous channels-last data (rows of C channels) through the buffer protocol
 * and writes into preallocated output buffers, so it needs no NumPy headers to build.
 * Every loop runs with the GIL released. The NumPy kernel in moments.py and
 * histogram.py is the reference; this one computes the same partials (the moments to
 * rounding, the counts and histograms exactly).
 *
 * Types: float16 'e', float32 'f', float64 'd', int8 'b', uint8 'B', int16 'h', uint16 'H',
 * int32 'i', uint32 'I', bool '?': each value is exact as a double. A bool is a byte read as
 * NumPy reads it: any nonzero byte is True (1). int64 'q' and uint64 'Q' are not exact as
 * doubles: their moments shift each value in its own type before it becomes a double, and
 * their extremes stay in the type (see PIECE_MOMENTS_64).
 *
 * Every entry point checks its arguments before it touches memory: each size computed
 * from them is checked against overflow (OverflowError), each buffer's item type against
 * the type code it is read or written as (TypeError), its length against the items used,
 * and the buffers written against sharing memory with any other (ValueError).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <errno.h>
#ifndef _WIN32
#include <unistd.h>
#endif

/* Wider vectors where the CPU has them, chosen when the module loads (GCC's function
 * multiversioning); the default clone runs on any x86-64. Elsewhere: one plain version. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define VECTOR_CLONES
#endif

/* ------------------------------------------------------------------ sizes and buffers */

/* *out = a * b * c * d for sizes that are not negative; -1 with OverflowError set when the
 * product passes PY_SSIZE_T_MAX (ValueError for a negative factor). */
static int size_product(Py_ssize_t *out, Py_ssize_t a, Py_ssize_t b, Py_ssize_t c,
                        Py_ssize_t d)
{
    Py_ssize_t factors[4] = {a, b, c, d}, product = 1;
    for (int i = 0; i < 4; i++) {
        if (factors[i] < 0) {
            PyErr_SetString(PyExc_ValueError, "a size is negative");
            return -1;
        }
        if (factors[i] && product > PY_SSIZE_T_MAX / factors[i]) {
            PyErr_SetString(PyExc_OverflowError, "the sizes given pass the address space");
            return -1;
        }
        product *= factors[i];
    }
    *out = product;
    return 0;
}

static int item_size(char code)
{
    switch (code) {
    case 'd': case 'q': case 'Q': return 8;
    case 'f': case 'i': case 'I': return 4;
    case 'h': case 'H': case 'e': return 2;
    case 'b': case 'B': case '?': return 1;
    default: return 0;
    }
}

/* The kind of a struct format character: 'i' signed integer, 'u' unsigned, 'f' float,
 * '?' bool; 0 for any other. */
static char format_kind(char character)
{
    switch (character) {
    case 'b': case 'h': case 'i': case 'l': case 'q': case 'n': return 'i';
    case 'B': case 'H': case 'I': case 'L': case 'Q': case 'N': return 'u';
    case 'e': case 'f': case 'd': return 'f';
    case '?': return '?';
    default: return 0;
    }
}

/* Whether the items of `view` are of the kernel's type `code`, in native byte order: of its
 * kind and size (NumPy's int64 is 'l' on one platform and 'q' on another). */
static int format_matches(const Py_buffer *view, char code)
{
    const char *format = view->format ? view->format : "B";
    const char native = PY_LITTLE_ENDIAN ? '<' : '>';
    if (*format == '@' || *format == '=' || *format == native)
        format++;
    return format[0] && !format[1] && format_kind(format[0]) == format_kind(code) &&
           view->itemsize == item_size(code);
}

/* An argument that is a buffer: what the kernel needs of it, then the view got. */
typedef struct {
    PyObject *object; /* the argument (None for an `optional` one left out) */
    const char *name;
    char code;        /* the type code of its items; 0: bytes, of any format */
    Py_ssize_t items; /* the items used (bytes, with code 0); -1: all it holds */
    int writable, optional;
    Py_buffer view;   /* set by get_buffers, where `got` */
    Py_ssize_t bytes; /* the bytes used */
    int got;
} buffer_arg;

/* A buffer argument that must be there: its object, name, code, items and whether written. */
#define BUFFER(OBJECT, NAME, CODE, ITEMS, WRITABLE)                                        \
    {.object = (OBJECT), .name = (NAME), .code = (CODE), .items = (ITEMS),                 \
     .writable = (WRITABLE)}

static void release_buffers(int count, buffer_arg *args)
{
    for (int i = 0; i < count; i++)
        if (args[i].got) {
            PyBuffer_Release(&args[i].view);
            args[i].got = 0;
        }
}

/* Whether the used bytes of two buffers share memory. */
static int overlap(const buffer_arg *a, const buffer_arg *b)
{
    uintptr_t start_a = (uintptr_t)a->view.buf, start_b = (uintptr_t)b->view.buf;
    return a->bytes > 0 && b->bytes > 0 && start_a < start_b + (uintptr_t)b->bytes &&
           start_b < start_a + (uintptr_t)a->bytes;
}

/* Get the views of `count` buffer arguments: C-contiguous, writable where asked, of the
 * items of their code, long enough for the items used; no buffer written shares memory
 * with another. On a failure the views got are released and -1 returned, the error set. */
static int get_buffers(int count, buffer_arg *args)
{
    for (int i = 0; i < count; i++)
        args[i].got = 0;
    for (int i = 0; i < count; i++) {
        buffer_arg *arg = &args[i];
        arg->bytes = 0;
        if (arg->optional && arg->object == Py_None) {
            arg->view.buf = NULL;
            continue;
        }
        int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (arg->writable ? PyBUF_WRITABLE : 0);
        if (PyObject_GetBuffer(arg->object, &arg->view, flags) < 0)
            goto failed;
        arg->got = 1;
        if (arg->code && !format_matches(&arg->view, arg->code)) {
            PyErr_Format(PyExc_TypeError, "%s holds items of format '%s' (%zd bytes each), not "
                         "of the type code '%c'", arg->name,
                         arg->view.format ? arg->view.format : "B", arg->view.itemsize,
                         arg->code);
            goto failed;
        }
        if (arg->items < 0)
            arg->bytes = arg->view.len;
        else if (size_product(&arg->bytes, arg->items, arg->code ? item_size(arg->code) : 1,
                              1, 1) < 0)
            goto failed;
        if (arg->view.len < arg->bytes) {
            PyErr_Format(PyExc_ValueError, "%s holds %zd bytes, %zd needed", arg->name,
                         arg->view.len, arg->bytes);
            goto failed;
        }
    }
    for (int i = 0; i < count; i++)
        for (int j = i + 1; j < count; j++)
            if ((args[i].writable || args[j].writable) && overlap(&args[i], &args[j])) {
                PyErr_Format(PyExc_ValueError, "%s and %s share memory", args[i].name,
                             args[j].name);
                goto failed;
            }
    return 0;
failed:
    release_buffers(count, args);
    return -1;
}

/* The kernel's type code of a one-character str; 0 with ValueError set for any other. */
static char type_code(const char *text, Py_ssize_t length)
{
    char code = length == 1 ? text[0] : 0;
    if (!item_size(code)) {
        PyErr_SetString(PyExc_ValueError, "no kernel for this type code (one of "
                        "e f d b B h H i I q Q ?)");
        return 0;
    }
    return code;
}

/* float16 is stored as 16 bits and read through a table of its 65536 values as doubles
 * (exact), filled when the module loads. */
typedef uint16_t half_t;
static double half_values[65536];

static void fill_half_values(void)
{
    for (uint32_t h = 0; h < 65536; h++) {
        uint32_t exponent = (h >> 10) & 0x1f, fraction = h & 0x3ff;
        double value;
        if (exponent == 0)
            value = ldexp((double)fraction, -24);
        else if (exponent == 31)
            value = fraction ? NAN : INFINITY;
        else
            value = ldexp((double)(fraction | 0x400), (int)exponent - 25);
        half_values[h] = (h >> 15) ? -value : value;
    }
}

/* bool is stored as a byte, and any nonzero byte is True: its value is (byte != 0). A type
 * of its own name, so that its loops are apart from uint8's. */
typedef uint8_t bool8_t;
#define BOOL_AS_BYTE(VALUE) ((uint8_t)((VALUE) != 0))

#define AS_DOUBLE(TYPE, VALUE) as_double_##TYPE(VALUE)
#define AS_DOUBLE_PLAIN(TYPE)                                                              \
    static inline double as_double_##TYPE(TYPE value) { return (double)value; }
AS_DOUBLE_PLAIN(float)
AS_DOUBLE_PLAIN(double)
AS_DOUBLE_PLAIN(int8_t)
AS_DOUBLE_PLAIN(uint8_t)
AS_DOUBLE_PLAIN(int16_t)
AS_DOUBLE_PLAIN(uint16_t)
AS_DOUBLE_PLAIN(int32_t)
AS_DOUBLE_PLAIN(uint32_t)
AS_DOUBLE_PLAIN(int64_t)
AS_DOUBLE_PLAIN(uint64_t)
static inline double as_double_half_t(half_t value) { return half_values[value]; }
static inline double as_double_bool8_t(bool8_t value) { return (double)BOOL_AS_BYTE(value); }

/* The loops of each type code. */
#define DISPATCH(CODE, CALL)                                                               \
    switch (CODE) {                                                                        \
    case 'f': CALL(float); break;                                                          \
    case 'd': CALL(double); break;                                                         \
    case 'e': CALL(half_t); break;                                                         \
    case 'b': CALL(int8_t); break;                                                         \
    case 'B': CALL(uint8_t); break;                                                        \
    case '?': CALL(bool8_t); break;                                                        \
    case 'h': CALL(int16_t); break;                                                        \
    case 'H': CALL(uint16_t); break;                                                       \
    case 'i': CALL(int32_t); break;                                                        \
    case 'I': CALL(uint32_t); break;                                                       \
    case 'q': CALL(int64_t); break;                                                        \
    case 'Q': CALL(uint64_t); break;                                                       \
    }

/* ------------------------------------------------------------------------ moments */

/*
 * One piece of `rows` rows of `channels` values, `stride` apart (a range of the columns of
 * wider rows, or whole rows): per channel the sum of (x - shift), min and max (first pass),
 * then, with the piece in cache, the centred sums of powers about the piece's own mean and
 * the counts of values equal to 0, to the min and to the max (second pass). The sums are
 * float64 arithmetic over a row of channels, which the compiler vectorizes; the extremes
 * and the comparisons are done in the input's own type (ETYPE: exact, and eight or more
 * lanes to a vector where the sums have four), the counts in int32 lanes (a piece has
 * fewer than 2**31 rows). float16 has no arithmetic type of its own: its ETYPE is double;
 * bool's is a byte of 0 or 1.
 */
/* A piece's working arrays, `channels` long each: the extremes so far in the piece's ETYPE
 * (room for 8 bytes a value), the three counts and, for 64-bit integers, each channel's
 * shift in the type. Each is only ever used as its one type. */
typedef struct {
    void *low, *high;
    int32_t *zeros, *at_min, *at_max;
    uint64_t *origin;
} piece_work;

static void piece_work_free(piece_work *work)
{
    PyMem_RawFree(work->low);
    PyMem_RawFree(work->high);
    PyMem_RawFree(work->zeros);
    PyMem_RawFree(work->at_min);
    PyMem_RawFree(work->at_max);
    PyMem_RawFree(work->origin);
    memset(work, 0, sizeof *work);
}

/* Allocate the working arrays of pieces of up to `channels` channels; -1 with the error set
 * on a failure. */
static int piece_work_new(piece_work *work, Py_ssize_t channels)
{
    Py_ssize_t wide, narrow;
    memset(work, 0, sizeof *work);
    if (size_product(&wide, channels, 8, 1, 1) < 0 ||
        size_product(&narrow, channels, sizeof(int32_t), 1, 1) < 0)
        return -1;
    work->low = PyMem_RawMalloc((size_t)wide);
    work->high = PyMem_RawMalloc((size_t)wide);
    work->origin = PyMem_RawMalloc((size_t)wide);
    work->zeros = PyMem_RawMalloc((size_t)narrow);
    work->at_min = PyMem_RawMalloc((size_t)narrow);
    work->at_max = PyMem_RawMalloc((size_t)narrow);
    if (!work->low || !work->high || !work->origin || !work->zeros || !work->at_min ||
        !work->at_max) {
        piece_work_free(work);
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

/* Shared by PIECE_MOMENTS and PIECE_MOMENTS_64: the piece function's signature (OTYPE: the
 * extremes' output type) and its state in `work` (extremes in ETYPE, int32 counts). */
#define PIECE_SIGNATURE(TYPE, OTYPE)                                                       \
    static void piece_##TYPE(                                                              \
        const TYPE *restrict x, Py_ssize_t rows, Py_ssize_t channels, Py_ssize_t stride,   \
        const double *restrict shift, double *restrict total, double *restrict mean,       \
        double *restrict m2, double *restrict m3, double *restrict m4,                     \
        OTYPE *restrict minimum, OTYPE *restrict maximum, int64_t *restrict zeros,         \
        int64_t *restrict at_min, int64_t *restrict at_max, const piece_work *work)
#define PIECE_STATE(ETYPE)                                                                 \
    ETYPE *restrict low = work->low, *restrict high = work->high;                          \
    int32_t *restrict zc = work->zeros, *restrict lc = work->at_min;                       \
    int32_t *restrict hc = work->at_max;

/* Also shared: each channel's mean from its total and
 * the second pass's sums zeroed; then the extremes (converted to the output's type) and the
 * counts written out. */
#define PIECE_MEANS_AND_RESET                                                              \
    for (c = 0; c < channels; c++) {                                                       \
        mean[c] = total[c] / (double)rows;                                                 \
        m2[c] = 0.0;                                                                       \
        zc[c] = lc[c] = hc[c] = 0;                                                         \
        if (m3)                                                                            \
            m3[c] = m4[c] = 0.0;                                                           \
    }
#define PIECE_WRITE_EXTREMES_AND_COUNTS                                                    \
    for (c = 0; c < channels; c++) {                                                       \
        minimum[c] = low[c];                                                               \
        maximum[c] = high[c];                                                              \
        zeros[c] = zc[c];                                                                  \
        at_min[c] = lc[c];                                                                 \
        at_max[c] = hc[c];                                                                 \
    }

#define PIECE_MOMENTS(TYPE, ETYPE, AS_E)                                                   \
    VECTOR_CLONES PIECE_SIGNATURE(TYPE, double)                                            \
    {                                                                                      \
        PIECE_STATE(ETYPE)                                                                 \
        Py_ssize_t r, c;                                                                   \
        for (c = 0; c < channels; c++) {                                                   \
            total[c] = 0.0;                                                                \
            low[c] = high[c] = AS_E(x[c]);                                                 \
        }                                                                                  \
        for (r = 0; r < rows; r++) {                                                       \
            const TYPE *restrict row = x + r * stride;                                     \
            for (c = 0; c < channels; c++) {                                               \
                ETYPE e = AS_E(row[c]);                                                    \
                total[c] += AS_DOUBLE(TYPE, row[c]) - shift[c];                            \
                low[c] = e < low[c] ? e : low[c];                                          \
                high[c] = e > high[c] ? e : high[c];                                       \
            }                                                                              \
        }                                                                                  \
        PIECE_MEANS_AND_RESET                                                              \
        for (r = 0; r < rows; r++) {                                                       \
            const TYPE *restrict row = x + r * stride;                                     \
            for (c = 0; c < channels; c++) {                                               \
                ETYPE e = AS_E(row[c]);                                                    \
                double d = (AS_DOUBLE(TYPE, row[c]) - shift[c]) - mean[c];                 \
                m2[c] += d * d;                                                            \
                zc[c] += e == (ETYPE)0;                                                    \
                lc[c] += e == low[c];                                                      \
                hc[c] += e == high[c];                                                     \
            }                                                                              \
            if (m3) {                                                                      \
                for (c = 0; c < channels; c++) {                                           \
                    double d = (AS_DOUBLE(TYPE, row[c]) - shift[c]) - mean[c];             \
                    double d3 = d * d * d;                                                 \
                    m3[c] += d3;                                                           \
                    m4[c] += d3 * d;                                                       \
                }                                                                          \
            }                                                                              \
        }                                                                                  \
        PIECE_WRITE_EXTREMES_AND_COUNTS                                                    \
    }

#define SAME(VALUE) (VALUE)
#define HALF_AS_DOUBLE(VALUE) half_values[VALUE]
PIECE_MOMENTS(float, float, SAME)
PIECE_MOMENTS(double, double, SAME)
PIECE_MOMENTS(half_t, double, HALF_AS_DOUBLE)
PIECE_MOMENTS(int8_t, int8_t, SAME)
PIECE_MOMENTS(uint8_t, uint8_t, SAME)
PIECE_MOMENTS(bool8_t, uint8_t, BOOL_AS_BYTE)
PIECE_MOMENTS(int16_t, int16_t, SAME)
PIECE_MOMENTS(uint16_t, uint16_t, SAME)
PIECE_MOMENTS(int32_t, int32_t, SAME)
PIECE_MOMENTS(uint32_t, uint32_t, SAME)

/* A 64-bit integer value less the shift, as a double: in the type itself (wrapping, so
 * exact while the piece lies within 2**62 of the shift: `exact`), else as doubles. The
 * choice of subtract_shift in moments.py. */
#define WRAP_LIMIT 4611686018427387904.0 /* 2**62 */

/* A shift as a value of int64 or uint64, which shifts_fit checks it is; 0 for any other
 * double, so that the conversion is defined whatever the buffer holds by then. */
static inline int64_t shift_int64_t(double s)
{
    return s >= -9223372036854775808.0 && s < 9223372036854775808.0 ? (int64_t)s : 0;
}
static inline uint64_t shift_uint64_t(double s)
{
    return s >= 0.0 && s < 18446744073709551616.0 ? (uint64_t)s : 0;
}
#define SHIFTED_64(VALUE, ORIGIN, SHIFT)                                                   \
    (exact ? (double)(int64_t)((uint64_t)(VALUE) - (ORIGIN)) : (double)(VALUE) - (SHIFT))

/*
 * PIECE_MOMENTS for int64 and uint64, which a double does not hold exactly: the first pass
 * sums the values shifted in their own type; if the piece's extremes show that could wrap,
 * the sums are taken again as doubles. The extremes are written in the type itself.
 */
#define PIECE_MOMENTS_64(TYPE)                                                             \
    PIECE_SIGNATURE(TYPE, TYPE)                                                            \
    {                                                                                      \
        PIECE_STATE(TYPE)                                                                  \
        uint64_t *restrict origin = work->origin;                                          \
        Py_ssize_t r, c;                                                                   \
        int exact = 1;                                                                     \
        for (c = 0; c < channels; c++) {                                                   \
            total[c] = 0.0;                                                                \
            low[c] = high[c] = x[c];                                                       \
            origin[c] = (uint64_t)shift_##TYPE(shift[c]);                                  \
        }                                                                                  \
        for (r = 0; r < rows; r++) {                                                       \
            const TYPE *restrict row = x + r * stride;                                     \
            for (c = 0; c < channels; c++) {                                               \
                TYPE e = row[c];                                                           \
                total[c] += (double)(int64_t)((uint64_t)e - origin[c]);                    \
                low[c] = e < low[c] ? e : low[c];                                          \
                high[c] = e > high[c] ? e : high[c];                                       \
            }                                                                              \
        }                                                                                  \
        for (c = 0; c < channels; c++)                                                     \
            exact &= fabs((double)high[c] - shift[c]) < WRAP_LIMIT &&                      \
                     fabs((double)low[c] - shift[c]) < WRAP_LIMIT;                         \
        if (!exact) {                                                                      \
            for (c = 0; c < channels; c++)                                                 \
                total[c] = 0.0;                                                            \
            for (r = 0; r < rows; r++)                                                     \
                for (c = 0; c < channels; c++)                                             \
                    total[c] += (double)x[r * stride + c] - shift[c];                      \
        }                                                                                  \
        PIECE_MEANS_AND_RESET                                                              \
        for (r = 0; r < rows; r++) {                                                       \
            const TYPE *restrict row = x + r * stride;                                     \
            for (c = 0; c < channels; c++) {                                               \
                TYPE e = row[c];                                                           \
                double d = SHIFTED_64(e, origin[c], shift[c]) - mean[c];                   \
                m2[c] += d * d;                                                            \
                zc[c] += e == 0;                                                           \
                lc[c] += e == low[c];                                                      \
                hc[c] += e == high[c];                                                     \
                if (m3) {                                                                  \
                    double d3 = d * d * d;                                                 \
                    m3[c] += d3;                                                           \
                    m4[c] += d3 * d;                                                       \
                }                                                                          \
            }                                                                              \
        }                                                                                  \
        PIECE_WRITE_EXTREMES_AND_COUNTS                                                    \
    }

PIECE_MOMENTS_64(int64_t)
PIECE_MOMENTS_64(uint64_t)

/* OTYPE: the type the piece's extremes are written in. */
#define CALL_PIECE(TYPE, OTYPE)                                                            \
    piece_##TYPE((const TYPE *)source + first * channels, stop - start, channels, channels, \
                 shift,                                                                    \
                 total + p * channels, mean + p * channels, m2 + p * channels,             \
                 m3 ? m3 + p * channels : NULL, m4 ? m4 + p * channels : NULL,             \
                 (OTYPE *)minimum + p * channels, (OTYPE *)maximum + p * channels,         \
                 zeros + p * channels,                                                     \
                 at_min + p * channels, at_max + p * channels, &work)

/* Whether the `n` values at `x` are all finite. */
static int all_finite(const double *x, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return 0;
    return 1;
}

/* Read `n` bytes at `offset` of `fd` into `out`, through interruptions; returns the bytes
 * read (fewer at the end of the file) and sets *error to errno on a failure. */
static Py_ssize_t read_at(int fd, char *out, Py_ssize_t n, long long offset, int *error)
{
    Py_ssize_t done = 0;
#ifdef _WIN32
    (void)fd, (void)out, (void)n, (void)offset;
    *error = ENOSYS;
#else
    while (done < n) {
        ssize_t got = pread(fd, out + done, (size_t)(n - done), (off_t)(offset + done));
        if (got < 0) {
            if (errno == EINTR)
                continue;
            *error = errno;
            break;
        }
        if (got == 0)
            break;
        done += got;
    }
#endif
    return done;
}

/* NaN-propagating extremes, as NumPy's minimum and maximum; plain ones for integers. */
static inline double lower_double(double a, double b) { return a != a || b != b ? a + b : (a < b ? a : b); }
static inline double upper_double(double a, double b) { return a != a || b != b ? a + b : (a > b ? a : b); }
#define PLAIN_EXTREMES(TYPE)                                                               \
    static inline TYPE lower_##TYPE(TYPE a, TYPE b) { return a < b ? a : b; }              \
    static inline TYPE upper_##TYPE(TYPE a, TYPE b) { return a > b ? a : b; }
PLAIN_EXTREMES(int64_t)
PLAIN_EXTREMES(uint64_t)

/*
 * Merge the rows of the partials of a block's pieces (one shift, none empty) into row 0:
 * neighbours paired level by level, an odd last one carried up, each pair by the formulas
 * of Moments.merge in moments.py, in the same order of operations, so the bits are the
 * ones a merge of the rows in NumPy gives. `total` is summed alike (for a finiteness test).
 * OTYPE is the type of the extremes: double, or int64/uint64 for those inputs.
 */
#define MERGE_PIECES(OTYPE)                                                                \
    static void merge_pieces_##OTYPE(                                                      \
        Py_ssize_t pieces, Py_ssize_t channels, int64_t *count, const double *shift,       \
        double *total, double *mean, double *m2, OTYPE *minimum, OTYPE *maximum,           \
        int64_t *zeros, int64_t *at_min, int64_t *at_max)                                  \
    {                                                                                      \
        for (Py_ssize_t n = pieces; n > 1; n = (n + 1) / 2) {                              \
            Py_ssize_t pairs = n / 2;                                                      \
            for (Py_ssize_t k = 0; k < pairs; k++) {                                       \
                int64_t ca = count[2 * k], cb = count[2 * k + 1], both = ca + cb;          \
                double fraction_b = (double)cb / (double)both;                             \
                for (Py_ssize_t c = 0; c < channels; c++) {                                \
                    Py_ssize_t a = 2 * k * channels + c, b = a + channels;                 \
                    Py_ssize_t o = k * channels + c;                                       \
                    double delta = (shift[c] - shift[c]) + (mean[b] - mean[a]);            \
                    OTYPE low = lower_##OTYPE(minimum[a], minimum[b]);                     \
                    OTYPE high = upper_##OTYPE(maximum[a], maximum[b]);                    \
                    int64_t low_ties = (minimum[a] == low ? at_min[a] : 0) +               \
                                       (minimum[b] == low ? at_min[b] : 0);                \
                    int64_t high_ties = (maximum[a] == high ? at_max[a] : 0) +             \
                                        (maximum[b] == high ? at_max[b] : 0);              \
                    double merged_m2 =                                                     \
                        (m2[a] + m2[b]) + ((delta * delta) * (double)ca) * fraction_b;     \
                    mean[o] = mean[a] + delta * fraction_b;                                \
                    m2[o] = merged_m2;                                                     \
                    total[o] = total[a] + total[b];                                        \
                    zeros[o] = zeros[a] + zeros[b];                                        \
                    minimum[o] = low;                                                      \
                    maximum[o] = high;                                                     \
                    at_min[o] = low_ties;                                                  \
                    at_max[o] = high_ties;                                                 \
                }                                                                          \
                count[k] = both;                                                           \
            }                                                                              \
            if (n % 2) {                                                                   \
                Py_ssize_t from = (n - 1) * channels, to = pairs * channels;               \
                memmove(total + to, total + from, channels * sizeof(double));              \
                memmove(mean + to, mean + from, channels * sizeof(double));                \
                memmove(m2 + to, m2 + from, channels * sizeof(double));                    \
                memmove(minimum + to, minimum + from, channels * sizeof(OTYPE));           \
                memmove(maximum + to, maximum + from, channels * sizeof(OTYPE));           \
                memmove(zeros + to, zeros + from, channels * sizeof(int64_t));             \
                memmove(at_min + to, at_min + from, channels * sizeof(int64_t));           \
                memmove(at_max + to, at_max + from, channels * sizeof(int64_t));           \
                count[pairs] = count[n - 1];                                               \
            }                                                                              \
        }                                                                                  \
    }

MERGE_PIECES(double)
MERGE_PIECES(int64_t)
MERGE_PIECES(uint64_t)

/* The buffer arguments of rows_moments and columns_moments, in their argument order: data,
 * shift, total, mean, m2, m3, m4 (these two may be None), minimum, maximum and the three
 * counts. data holds data_items values of `code` (written with data_writable), shift a
 * double a channel, each output out_items values: float64, the extremes int64 or uint64
 * for those inputs, the counts int64. */
enum { MOMENT_BUFFERS = 12 };

static void moment_arguments(buffer_arg *args, PyObject *const *objects, char code,
                             Py_ssize_t data_items, int data_writable, Py_ssize_t channels,
                             Py_ssize_t out_items)
{
    static const char *const names[MOMENT_BUFFERS] = {
        "data", "shift", "total", "mean", "m2", "m3", "m4", "minimum", "maximum",
        "zero_count", "min_count", "max_count"};
    char extremes = code == 'q' || code == 'Q' ? code : 'd';
    for (int i = 0; i < MOMENT_BUFFERS; i++) {
        buffer_arg *arg = &args[i];
        arg->object = objects[i];
        arg->name = names[i];
        arg->code = i == 0 ? code : i <= 6 ? 'd' : i <= 8 ? extremes : 'q';
        arg->items = i == 0 ? data_items : i == 1 ? channels : out_items;
        arg->writable = i >= 2 || (i == 0 && data_writable);
        arg->optional = i == 5 || i == 6;
    }
}

/* Whether each of the `channels` shifts of data of 64-bit integers (code 'q' or 'Q') is a
 * value of the type, which it is converted to; ValueError set where not. Other codes take
 * any shift. */
static int shifts_fit(char code, const double *shift, Py_ssize_t channels)
{
    double low = code == 'q' ? -9223372036854775808.0 : 0.0;
    double high = code == 'q' ? 9223372036854775808.0 : 18446744073709551616.0;
    if (code != 'q' && code != 'Q')
        return 1;
    for (Py_ssize_t c = 0; c < channels; c++)
        if (!(shift[c] >= low && shift[c] < high)) {
            PyErr_SetString(PyExc_ValueError, "a shift is not a value of the data's type");
            return 0;
        }
    return 1;
}

/* CALL(TYPE, OTYPE) for the kernel's type `code` (OTYPE: the extremes' output type). */
#define PIECE_DISPATCH(CODE, CALL)                                                         \
    switch (CODE) {                                                                        \
    case 'f': CALL(float, double); break;                                                  \
    case 'd': CALL(double, double); break;                                                 \
    case 'e': CALL(half_t, double); break;                                                 \
    case 'b': CALL(int8_t, double); break;                                                 \
    case 'B': CALL(uint8_t, double); break;                                                \
    case '?': CALL(bool8_t, double); break;                                                \
    case 'h': CALL(int16_t, double); break;                                                \
    case 'H': CALL(uint16_t, double); break;                                               \
    case 'i': CALL(int32_t, double); break;                                                \
    case 'I': CALL(uint32_t, double); break;                                               \
    case 'q': CALL(int64_t, int64_t); break;                                               \
    case 'Q': CALL(uint64_t, uint64_t); break;                                             \
    }

static const char rows_moments_doc[] =
    "rows_moments(data, code, rows, channels, piece_rows, shift, total, mean, m2, m3, m4,\n"
    "             minimum, maximum, zero_count, min_count, max_count, fd=-1, offset=0,\n"
    "             merge=False)\n\n"
    "Moments of each piece of piece_rows rows of channels-last data, one output row per\n"
    "piece: float64 total (of x - shift), mean, m2 (m3 and m4 unless None), minimum and\n"
    "maximum (float64; int64 or uint64 for those inputs, codes 'q' and 'Q'), int64 counts\n"
    "of zeros and of values at the piece's min and max.\n\n"
    "With a file descriptor fd, the rows are read from the file at byte offset, one piece\n"
    "at a time, into data (then a writable buffer of piece_rows rows), so that each piece\n"
    "is still in cache when it is reduced. Returns (bytes, merged): the bytes read\n"
    "(fewer than the rows hold when the file ends first, and then only the pieces read\n"
    "whole are reduced) and whether the rows were merged.\n\n"
    "With merge (order 2 only: m3 and m4 None), the pieces' rows are merged into the\n"
    "first, as a pairwise tree (see merge_pieces), after they are all reduced, unless a\n"
    "piece's total is not finite (NaN or Inf in it): its rows are then left one a piece,\n"
    "so that only those pieces are reduced again by the caller.\n\n"
    "Raises ValueError for a size out of range or a buffer too short or sharing memory\n"
    "with one written, OverflowError for sizes past the address space, TypeError for a\n"
    "buffer whose items are not of the type they are used as, OSError for a failed read.";

static PyObject *rows_moments(PyObject *self, PyObject *args)
{
    PyObject *objects[MOMENT_BUFFERS];
    const char *code_text;
    Py_ssize_t code_length, rows, channels, piece_rows;
    int fd = -1, merge = 0;
    long long offset = 0;
    if (!PyArg_ParseTuple(args, "Os#nnnOOOOOOOOOOO|iLp", &objects[0], &code_text,
                          &code_length, &rows, &channels, &piece_rows, &objects[1],
                          &objects[2], &objects[3], &objects[4], &objects[5], &objects[6],
                          &objects[7], &objects[8], &objects[9], &objects[10], &objects[11],
                          &fd, &offset, &merge))
        return NULL;
    if (merge && (objects[5] != Py_None || objects[6] != Py_None)) {
        PyErr_SetString(PyExc_ValueError, "merge is for order 2: m3 and m4 must be None");
        return NULL;
    }
    char code = type_code(code_text, code_length);
    if (!code)
        return NULL;
    int size = item_size(code);
    if (rows < 0 || channels <= 0 || piece_rows <= 0 || piece_rows > INT32_MAX || offset < 0) {
        PyErr_SetString(PyExc_ValueError, "rows, channels and piece_rows (below 2**31) must be "
                        "positive, offset not negative");
        return NULL;
    }
    Py_ssize_t pieces = rows / piece_rows + (rows % piece_rows != 0);
    Py_ssize_t data_rows = fd >= 0 ? (piece_rows < rows ? piece_rows : rows) : rows;
    Py_ssize_t out_items, data_items, total_bytes;
    if (size_product(&out_items, pieces, channels, 1, 1) < 0 ||
        size_product(&data_items, data_rows, channels, 1, 1) < 0 ||
        size_product(&total_bytes, rows, channels, size, 1) < 0)
        return NULL;
    if (fd >= 0 && offset > LLONG_MAX - total_bytes) {
        PyErr_SetString(PyExc_OverflowError, "offset and the rows' bytes pass the largest "
                        "file offset");
        return NULL;
    }
    buffer_arg buffers[MOMENT_BUFFERS];
    moment_arguments(buffers, objects, code, data_items, fd >= 0, channels, out_items);
    if (get_buffers(MOMENT_BUFFERS, buffers) < 0)
        return NULL;
    char *data = buffers[0].view.buf;
    const double *shift = buffers[1].view.buf;
    double *total = buffers[2].view.buf, *mean = buffers[3].view.buf, *m2 = buffers[4].view.buf;
    double *m3 = buffers[5].view.buf, *m4 = buffers[6].view.buf;
    void *minimum = buffers[7].view.buf, *maximum = buffers[8].view.buf;
    int64_t *zeros = buffers[9].view.buf, *at_min = buffers[10].view.buf;
    int64_t *at_max = buffers[11].view.buf;
    piece_work work;
    int64_t *count = NULL;
    if (!shifts_fit(code, shift, channels) || piece_work_new(&work, channels) < 0) {
        release_buffers(MOMENT_BUFFERS, buffers);
        return NULL;
    }
    if (merge && !(count = PyMem_RawMalloc((size_t)(pieces ? pieces : 1) * sizeof(int64_t)))) {
        piece_work_free(&work);
        release_buffers(MOMENT_BUFFERS, buffers);
        return PyErr_NoMemory();
    }
    Py_ssize_t bytes_read = 0;
    int merged = 0, error = 0, whole = 1;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t p = 0; p < pieces; p++) {
        Py_ssize_t start = p * piece_rows;
        Py_ssize_t stop = rows - start > piece_rows ? start + piece_rows : rows;
        const char *source = data;
        Py_ssize_t first = start;
        if (fd >= 0) {
            Py_ssize_t want = (stop - start) * channels * size;
            Py_ssize_t got = read_at(fd, data, want,
                                     offset + (long long)start * channels * size, &error);
            bytes_read += got;
            if (got < want) {
                whole = 0;
                break;
            }
            first = 0;
        }
        if (count)
            count[p] = stop - start;
        PIECE_DISPATCH(code, CALL_PIECE)
    }
    if (count && whole && pieces > 0 && all_finite(total, out_items)) {
        merged = 1;
#define MERGE(OTYPE)                                                                       \
    merge_pieces_##OTYPE(pieces, channels, count, shift, total, mean, m2, (OTYPE *)minimum, \
                         (OTYPE *)maximum, zeros, at_min, at_max)
        if (code == 'q')
            MERGE(int64_t);
        else if (code == 'Q')
            MERGE(uint64_t);
        else
            MERGE(double);
    }
    Py_END_ALLOW_THREADS
    piece_work_free(&work);
    PyMem_RawFree(count);
    release_buffers(MOMENT_BUFFERS, buffers);
    if (error) {
        errno = error;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return Py_BuildValue("(ni)", fd >= 0 ? bytes_read : total_bytes, merged);
}

static const char columns_moments_doc[] =
    "columns_moments(data, code, rows, channels, width, shift, total, mean, m2, m3, m4,\n"
    "                minimum, maximum, zero_count, min_count, max_count)\n\n"
    "rows_moments for rows too wide for a piece to hold many of them: the pieces are\n"
    "ranges of width columns over every row, so each channel is reduced in one piece and\n"
    "every output holds one row (channels values). Raises as rows_moments.";

static PyObject *columns_moments(PyObject *self, PyObject *args)
{
    PyObject *objects[MOMENT_BUFFERS];
    const char *code_text;
    Py_ssize_t code_length, rows, channels, width;
    if (!PyArg_ParseTuple(args, "Os#nnnOOOOOOOOOOO", &objects[0], &code_text, &code_length,
                          &rows, &channels, &width, &objects[1], &objects[2], &objects[3],
                          &objects[4], &objects[5], &objects[6], &objects[7], &objects[8],
                          &objects[9], &objects[10], &objects[11]))
        return NULL;
    char code = type_code(code_text, code_length);
    if (!code)
        return NULL;
    if (rows <= 0 || rows > INT32_MAX || channels <= 0 || width <= 0) {
        PyErr_SetString(PyExc_ValueError, "rows (below 2**31), channels and width must be "
                        "positive");
        return NULL;
    }
    if (width > channels)
        width = channels;
    Py_ssize_t data_items;
    if (size_product(&data_items, rows, channels, 1, 1) < 0)
        return NULL;
    buffer_arg buffers[MOMENT_BUFFERS];
    moment_arguments(buffers, objects, code, data_items, 0, channels, channels);
    if (get_buffers(MOMENT_BUFFERS, buffers) < 0)
        return NULL;
    const char *data = buffers[0].view.buf;
    const double *shift = buffers[1].view.buf;
    double *total = buffers[2].view.buf, *mean = buffers[3].view.buf, *m2 = buffers[4].view.buf;
    double *m3 = buffers[5].view.buf, *m4 = buffers[6].view.buf;
    void *minimum = buffers[7].view.buf, *maximum = buffers[8].view.buf;
    int64_t *zeros = buffers[9].view.buf, *at_min = buffers[10].view.buf;
    int64_t *at_max = buffers[11].view.buf;
    piece_work work;
    if (!shifts_fit(code, shift, channels) || piece_work_new(&work, width) < 0) {
        release_buffers(MOMENT_BUFFERS, buffers);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t first = 0; first < channels; first += width) {
        Py_ssize_t here = channels - first < width ? channels - first : width;
#define CALL_COLUMNS(TYPE, OTYPE)                                                          \
    piece_##TYPE((const TYPE *)data + first, rows, here, channels, shift + first,          \
                 total + first, mean + first, m2 + first, m3 ? m3 + first : NULL,          \
                 m4 ? m4 + first : NULL, (OTYPE *)minimum + first, (OTYPE *)maximum + first, \
                 zeros + first, at_min + first, at_max + first, &work)
        PIECE_DISPATCH(code, CALL_COLUMNS)
        if (channels - first <= width)
            break;
    }
    Py_END_ALLOW_THREADS
    piece_work_free(&work);
    release_buffers(MOMENT_BUFFERS, buffers);
    Py_RETURN_NONE;
}

/*
 * Slabs: data of shape (outer, channels, inner), reduced over outer and inner. One partial
 * per (outer, channel) run of `inner` contiguous values, written to out as the sum of
 * x - shift, the mean, m2, min, max, m3, m4 and the counts of zeros and of values at the
 * min and max. A run is reduced by the rows path's piece loop, which the compiler
 * vectorizes: its values taken as rows of RUN_LANES lanes (a channel each), the lanes'
 * partials (and those of the last values, fewer than a row) merged as pieces are, by
 * merge_pieces. m3 and m4, when asked for, take one more pass about the run's mean, in
 * four lanes (a fixed order, so the same bits every time).
 */
#define LANES 4
#define RUN_LANES 8
#define RUN_MOMENTS(TYPE, ETYPE)                                                           \
    static void run_##TYPE(const TYPE *restrict x, Py_ssize_t n, double s, int higher,     \
                           double *out)                                                    \
    {                                                                                      \
        double shift[RUN_LANES];                                                           \
        ETYPE work_low[RUN_LANES], work_high[RUN_LANES];                                   \
        int32_t work_zeros[RUN_LANES], work_at_min[RUN_LANES], work_at_max[RUN_LANES];     \
        const piece_work work = {work_low, work_high, work_zeros, work_at_min,             \
                                 work_at_max, NULL};                                       \
        double total[RUN_LANES + 1], mean[RUN_LANES + 1], m2[RUN_LANES + 1];               \
        double low[RUN_LANES + 1], high[RUN_LANES + 1];                                    \
        int64_t zeros[RUN_LANES + 1], at_min[RUN_LANES + 1], at_max[RUN_LANES + 1];        \
        int64_t count[RUN_LANES + 1];                                                      \
        Py_ssize_t rows = n / RUN_LANES, tail = n - rows * RUN_LANES, parts = 0, i;        \
        int j;                                                                             \
        for (j = 0; j < RUN_LANES; j++)                                                    \
            shift[j] = s;                                                                  \
        if (rows) {                                                                        \
            piece_##TYPE(x, rows, RUN_LANES, RUN_LANES, shift, total, mean, m2, NULL,      \
                         NULL, low, high, zeros, at_min, at_max, &work);                   \
            for (j = 0; j < RUN_LANES; j++)                                                \
                count[j] = rows;                                                           \
            parts = RUN_LANES;                                                             \
        }                                                                                  \
        if (tail) {                                                                        \
            piece_##TYPE(x + rows * RUN_LANES, tail, 1, 1, shift, total + parts,           \
                         mean + parts, m2 + parts, NULL, NULL, low + parts, high + parts,  \
                         zeros + parts, at_min + parts, at_max + parts, &work);            \
            count[parts++] = tail;                                                         \
        }                                                                                  \
        /* parts pieces of one channel each */                                             \
        merge_pieces_double(parts, 1, count, shift, total, mean, m2, low, high, zeros,     \
                            at_min, at_max);                                               \
        out[0] = total[0];                                                                 \
        out[1] = mean[0];                                                                  \
        out[2] = m2[0];                                                                    \
        out[3] = low[0];                                                                   \
        out[4] = high[0];                                                                  \
        out[7] = (double)zeros[0];                                                         \
        out[8] = (double)at_min[0];                                                        \
        out[9] = (double)at_max[0];                                                        \
        if (higher) {                                                                      \
            double m3[LANES] = {0}, m4[LANES] = {0};                                       \
            for (i = 0; i + LANES <= n; i += LANES)                                        \
                for (j = 0; j < LANES; j++) {                                              \
                    double e = (AS_DOUBLE(TYPE, x[i + j]) - s) - mean[0], e2 = e * e;      \
                    m3[j] += e2 * e;                                                       \
                    m4[j] += e2 * e2;                                                      \
                }                                                                          \
            for (; i < n; i++) {                                                           \
                double e = (AS_DOUBLE(TYPE, x[i]) - s) - mean[0], e2 = e * e;              \
                m3[0] += e2 * e;                                                           \
                m4[0] += e2 * e2;                                                          \
            }                                                                              \
            out[5] = (m3[0] + m3[1]) + (m3[2] + m3[3]);                                    \
            out[6] = (m4[0] + m4[1]) + (m4[2] + m4[3]);                                    \
        }                                                                                  \
    }

RUN_MOMENTS(float, float)
RUN_MOMENTS(double, double)
RUN_MOMENTS(half_t, double)
RUN_MOMENTS(int8_t, int8_t)
RUN_MOMENTS(uint8_t, uint8_t)
RUN_MOMENTS(bool8_t, uint8_t)
RUN_MOMENTS(int16_t, int16_t)
RUN_MOMENTS(uint16_t, uint16_t)
RUN_MOMENTS(int32_t, int32_t)
RUN_MOMENTS(uint32_t, uint32_t)

/* RUN_MOMENTS for int64 and uint64: each value shifted in its own type where the run lies
 * within 2**62 of the shift (see PIECE_MOMENTS_64), the extremes compared in the type and
 * stored in out[3] and out[4] as its bits. */
#define RUN_MOMENTS_64(TYPE)                                                               \
    static void run_##TYPE(const TYPE *restrict x, Py_ssize_t n, double s, int higher,     \
                           double *out)                                                    \
    {                                                                                      \
        uint64_t origin = (uint64_t)shift_##TYPE(s);                                       \
        double total[LANES] = {0};                                                         \
        TYPE minimum = x[0], maximum = x[0];                                               \
        Py_ssize_t i, j;                                                                   \
        int exact;                                                                         \
        for (i = 0; i < n; i++) {                                                          \
            minimum = x[i] < minimum ? x[i] : minimum;                                     \
            maximum = x[i] > maximum ? x[i] : maximum;                                     \
        }                                                                                  \
        exact = fabs((double)maximum - s) < WRAP_LIMIT && fabs((double)minimum - s) < WRAP_LIMIT; \
        for (i = 0; i + LANES <= n; i += LANES)                                            \
            for (j = 0; j < LANES; j++)                                                    \
                total[j] += SHIFTED_64(x[i + j], origin, s);                               \
        for (; i < n; i++)                                                                 \
            total[0] += SHIFTED_64(x[i], origin, s);                                       \
        double sum = (total[0] + total[1]) + (total[2] + total[3]);                        \
        double mean = sum / (double)n;                                                     \
        double m2[LANES] = {0}, m3[LANES] = {0}, m4[LANES] = {0};                          \
        int64_t zeros = 0, at_min = 0, at_max = 0;                                         \
        for (i = 0; i < n; i++) {                                                          \
            double e = SHIFTED_64(x[i], origin, s) - mean, e2 = e * e;                     \
            j = i % LANES;                                                                 \
            m2[j] += e2;                                                                   \
            m3[j] += e2 * e;                                                               \
            m4[j] += e2 * e2;                                                              \
            zeros += x[i] == 0;                                                            \
            at_min += x[i] == minimum;                                                     \
            at_max += x[i] == maximum;                                                     \
        }                                                                                  \
        out[0] = sum;                                                                      \
        out[1] = mean;                                                                     \
        out[2] = (m2[0] + m2[1]) + (m2[2] + m2[3]);                                        \
        memcpy(out + 3, &minimum, 8);                                                      \
        memcpy(out + 4, &maximum, 8);                                                      \
        if (higher) {                                                                      \
            out[5] = (m3[0] + m3[1]) + (m3[2] + m3[3]);                                    \
            out[6] = (m4[0] + m4[1]) + (m4[2] + m4[3]);                                    \
        }                                                                                  \
        out[7] = (double)zeros;                                                            \
        out[8] = (double)at_min;                                                           \
        out[9] = (double)at_max;                                                           \
    }

RUN_MOMENTS_64(int64_t)
RUN_MOMENTS_64(uint64_t)

static const char slab_moments_doc[] =
    "slab_moments(data, code, outer, channels, inner, shift, higher, out)\n\n"
    "Moments of each run of inner contiguous values of (outer, channels, inner) data: out\n"
    "(float64, outer x channels x 10) gets the sum of x - shift, the mean, m2, min, max,\n"
    "m3 and m4 (with higher), and the counts of zeros and of values at the min and max.\n"
    "For int64 and uint64 (codes 'q' and 'Q') min and max are stored as the bits of their\n"
    "type. inner is below 2**34 (the counts of a lane are int32). Raises as rows_moments.";

static PyObject *slab_moments(PyObject *self, PyObject *args)
{
    PyObject *data_object, *shift_object, *out_object;
    const char *code_text;
    Py_ssize_t code_length, outer, channels, inner;
    int higher;
    if (!PyArg_ParseTuple(args, "Os#nnnOpO", &data_object, &code_text, &code_length, &outer,
                          &channels, &inner, &shift_object, &higher, &out_object))
        return NULL;
    char code = type_code(code_text, code_length);
    if (!code)
        return NULL;
    if (outer < 0 || channels <= 0 || inner <= 0 || inner / RUN_LANES > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "outer must not be negative, channels and inner "
                        "(below 2**34) must be positive");
        return NULL;
    }
    Py_ssize_t runs, data_items, out_items;
    if (size_product(&runs, outer, channels, 1, 1) < 0 ||
        size_product(&data_items, runs, inner, 1, 1) < 0 ||
        size_product(&out_items, runs, 10, 1, 1) < 0)
        return NULL;
    buffer_arg buffers[3] = {
        BUFFER(data_object, "data", code, data_items, 0),
        BUFFER(shift_object, "shift", 'd', channels, 0),
        BUFFER(out_object, "out", 'd', out_items, 1),
    };
    if (get_buffers(3, buffers) < 0)
        return NULL;
    const void *values = buffers[0].view.buf;
    const double *shifts = buffers[1].view.buf;
    double *results = buffers[2].view.buf;
    if (!shifts_fit(code, shifts, channels)) {
        release_buffers(3, buffers);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t run = 0; run < runs; run++) {
        double *row = results + run * 10;
#define RUN(TYPE)                                                                          \
    run_##TYPE((const TYPE *)values + run * inner, inner, shifts[run % channels], higher, row)
        DISPATCH(code, RUN)
    }
    Py_END_ALLOW_THREADS
    release_buffers(3, buffers);
    Py_RETURN_NONE;
}

/* ---------------------------------------------------------------------- histogram */

/* The grid: the float64 exponent and top `bits` mantissa bits of |x|. */
static inline uint64_t magnitude_key(double value, int bits)
{
    uint64_t word;
    memcpy(&word, &value, 8);
    return (word << 1) >> (53 - bits);
}

static inline int negative(double value)
{
    uint64_t word;
    memcpy(&word, &value, 8);
    return (int)(word >> 63);
}

/* The window pass's working arrays, `channels` long each: the lowest and highest key inside
 * (room for 8 bytes a key, used as the pass's KTYPE) and the counts of the zero bucket, of
 * its nonzero values and of the keys at or past HUGE. Each is only ever used as one type. */
typedef struct {
    void *low, *high;
    int64_t *zero, *nonzero, *huge;
} window_work;

static void window_work_free(window_work *work)
{
    PyMem_RawFree(work->low);
    PyMem_RawFree(work->high);
    PyMem_RawFree(work->zero);
    PyMem_RawFree(work->nonzero);
    PyMem_RawFree(work->huge);
    memset(work, 0, sizeof *work);
}

static int window_work_new(window_work *work, Py_ssize_t channels)
{
    Py_ssize_t bytes;
    memset(work, 0, sizeof *work);
    if (size_product(&bytes, channels, 8, 1, 1) < 0)
        return -1;
    work->low = PyMem_RawMalloc((size_t)bytes);
    work->high = PyMem_RawMalloc((size_t)bytes);
    work->zero = PyMem_RawMalloc((size_t)bytes);
    work->nonzero = PyMem_RawMalloc((size_t)bytes);
    work->huge = PyMem_RawMalloc((size_t)bytes);
    if (!work->low || !work->high || !work->zero || !work->nonzero || !work->huge) {
        window_work_free(work);
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

/* The window pass adds its counts into `special`; 1 where a sum would pass int64 (that
 * count is then left as it was). */
static int add_specials(int64_t *restrict special, const int64_t *found)
{
    int passed = 0;
    for (int k = 0; k < 5; k++) {
        if (special[k] > INT64_MAX - found[k])
            passed = 1;
        else
            special[k] += found[k];
    }
    return passed;
}

/*
 * The two histogram passes over channels-last rows, with each value's bucket key in KTYPE:
 * the float64 key of magnitude_key (KEY_DOUBLE), or for float32 the same key computed from
 * its own 32 bits, less the exponent bias difference (KEY_FLOAT: every float32 is exact
 * as a double, so the exponent and the top mantissa bits are its own, the key shifted by
 * BIAS_FLOAT), in lanes half as wide. TINY and HUGE bound the keys of normal finite values.
 *
 * The window pass keeps per channel the lowest and highest key inside and the counts of
 * the zero bucket, of its nonzero values and of the keys at or past HUGE, without a branch
 * per value; only a channel holding Inf or NaN is gone over again to tell them apart.
 * The count pass takes the channels in tiles whose cells stay in cache (`tile` channels
 * over every row); it counts a value only where its key lies in the window's buckets of
 * normal finite keys (one comparison), and returns how many normal finite values lie
 * outside the window (none when the window is the window pass's).
 */
#define KEY_DOUBLE(TYPE, VALUE) magnitude_key(AS_DOUBLE(TYPE, VALUE), bits)
#define NONZERO_DOUBLE(TYPE, VALUE) (AS_DOUBLE(TYPE, VALUE) != 0.0)
#define NEGATIVE_DOUBLE(TYPE, VALUE) negative(AS_DOUBLE(TYPE, VALUE))
#define NAN_DOUBLE(TYPE, VALUE) isnan(AS_DOUBLE(TYPE, VALUE))
#define TINY_DOUBLE ((uint64_t)(1023 - 126) << bits)
#define HUGE_DOUBLE ((uint64_t)2047 << bits)
#define BIAS_DOUBLE 0

static inline uint32_t float_bits(float value)
{
    uint32_t word;
    memcpy(&word, &value, 4);
    return word;
}
#define KEY_FLOAT(TYPE, VALUE) ((float_bits(VALUE) << 1) >> (24 - bits))
#define NONZERO_FLOAT(TYPE, VALUE) ((float_bits(VALUE) << 1) != 0)
#define NEGATIVE_FLOAT(TYPE, VALUE) (int)(float_bits(VALUE) >> 31)
#define NAN_FLOAT(TYPE, VALUE) ((float_bits(VALUE) & 0x7fffffffu) > 0x7f800000u)
#define TINY_FLOAT ((uint32_t)1 << bits)
#define HUGE_FLOAT ((uint32_t)255 << bits)
#define BIAS_FLOAT ((uint64_t)(1023 - 127) << bits)

#define HISTOGRAM_PASSES(TYPE, KTYPE, KIND)                                                \
    static int window_##TYPE(const TYPE *restrict x, Py_ssize_t rows, Py_ssize_t channels, \
                             int bits, uint64_t *low, uint64_t *high,                      \
                             int64_t *restrict special, const window_work *work)           \
    {                                                                                      \
        KTYPE *restrict lo = work->low, *restrict hi = work->high;                         \
        int64_t *restrict zero = work->zero, *restrict nonzero = work->nonzero;            \
        int64_t *restrict huge = work->huge;                                               \
        const KTYPE tiny = TINY_##KIND, infinite = HUGE_##KIND, none = (KTYPE)-1;          \
        Py_ssize_t r, c;                                                                   \
        int passed = 0;                                                                    \
        for (c = 0; c < channels; c++) {                                                   \
            lo[c] = none;                                                                  \
            hi[c] = 0;                                                                     \
            zero[c] = nonzero[c] = huge[c] = 0;                                            \
        }                                                                                  \
        for (r = 0; r < rows; r++) {                                                       \
            const TYPE *restrict row = x + r * channels;                                   \
            for (c = 0; c < channels; c++) {                                               \
                KTYPE key = KEY_##KIND(TYPE, row[c]);                                      \
                int small = key < tiny, large = key >= infinite, out = small | large;      \
                KTYPE least = out ? none : key, most = out ? 0 : key;                      \
                lo[c] = least < lo[c] ? least : lo[c];                                     \
                hi[c] = most > hi[c] ? most : hi[c];                                       \
                zero[c] += small;                                                          \
                nonzero[c] += small & NONZERO_##KIND(TYPE, row[c]);                        \
                huge[c] += large;                                                          \
            }                                                                              \
        }                                                                                  \
        KTYPE lowest = none, highest = 0;                                                  \
        for (c = 0; c < channels; c++) {                                                   \
            lowest = lo[c] < lowest ? lo[c] : lowest;                                      \
            highest = hi[c] > highest ? hi[c] : highest;                                   \
            int64_t found[5] = {zero[c], nonzero[c], 0, 0, 0};                             \
            if (huge[c])                                                                   \
                for (r = 0; r < rows; r++) {                                               \
                    TYPE value = x[r * channels + c];                                      \
                    if (KEY_##KIND(TYPE, value) < infinite)                                \
                        continue;                                                          \
                    if (NAN_##KIND(TYPE, value))                                           \
                        found[4] += 1;                                                     \
                    else                                                                   \
                        found[NEGATIVE_##KIND(TYPE, value) ? 3 : 2] += 1;                  \
                }                                                                          \
            passed |= add_specials(special + c * 5, found);                                \
        }                                                                                  \
        if (lowest > highest) { /* no normal finite value */                              \
            *low = UINT64_MAX;                                                             \
            *high = 0;                                                                     \
        } else {                                                                           \
            *low = (uint64_t)lowest + BIAS_##KIND;                                         \
            *high = (uint64_t)highest + BIAS_##KIND;                                       \
        }                                                                                  \
        return passed;                                                                     \
    }                                                                                      \
    COUNT_PASS(TYPE, KTYPE, KIND, uint16_t)                                                \
    COUNT_PASS(TYPE, KTYPE, KIND, uint32_t)

/* The count pass reads its tile's rows ahead: rows a page or more apart defeat the
 * hardware's prefetching. `low` is a key of normal finite values (TINY to HUGE, as float64
 * keys): `first`, the window's first key in KTYPE, is at least TINY. */
#define PREFETCH_ROWS 8
#define TILE_BYTES (256 * 1024)
#define COUNT_PASS(TYPE, KTYPE, KIND, CTYPE)                                               \
    static int64_t count_##TYPE##_##CTYPE(const TYPE *restrict x, Py_ssize_t rows,         \
                                          Py_ssize_t channels, int bits, uint64_t low,     \
                                          Py_ssize_t width, CTYPE *restrict counts,        \
                                          Py_ssize_t tile)                                 \
    {                                                                                      \
        const KTYPE tiny = TINY_##KIND, infinite = HUGE_##KIND;                            \
        const KTYPE first = (KTYPE)(low - BIAS_##KIND);                                    \
        /* the window's buckets below HUGE: a key among them is a normal finite one's */   \
        const uint64_t room = first < infinite ? (uint64_t)(infinite - first) : 0;         \
        const KTYPE span = (KTYPE)(room < (uint64_t)width ? room : (uint64_t)width);       \
        int64_t outside = 0;                                                               \
        for (Py_ssize_t c0 = 0; c0 < channels; c0 += tile) {                               \
            Py_ssize_t c1 = channels - c0 > tile ? c0 + tile : channels;                   \
            for (Py_ssize_t r = 0; r < rows; r++) {                                        \
                const TYPE *restrict row = x + r * channels;                               \
                if (r + PREFETCH_ROWS < rows)                                              \
                    for (Py_ssize_t c = c0; c < c1; c += 64 / sizeof(TYPE))                \
                        __builtin_prefetch(row + PREFETCH_ROWS * channels + c);            \
                for (Py_ssize_t c = c0; c < c1; c++) {                                     \
                    KTYPE key = KEY_##KIND(TYPE, row[c]);                                  \
                    KTYPE place = (KTYPE)(key - first);                                    \
                    if (place < span)                                                      \
                        counts[(c * 2 + NEGATIVE_##KIND(TYPE, row[c])) * width +           \
                               (Py_ssize_t)place] += 1;                                    \
                    else                                                                   \
                        outside += key >= tiny && key < infinite;                          \
                }                                                                          \
            }                                                                              \
            if (channels - c0 <= tile)                                                     \
                break;                                                                     \
        }                                                                                  \
        return outside;                                                                    \
    }

HISTOGRAM_PASSES(float, uint32_t, FLOAT)
HISTOGRAM_PASSES(double, uint64_t, DOUBLE)
HISTOGRAM_PASSES(half_t, uint64_t, DOUBLE)
HISTOGRAM_PASSES(int8_t, uint64_t, DOUBLE)
HISTOGRAM_PASSES(uint8_t, uint64_t, DOUBLE)
HISTOGRAM_PASSES(bool8_t, uint64_t, DOUBLE)
HISTOGRAM_PASSES(int16_t, uint64_t, DOUBLE)
HISTOGRAM_PASSES(uint16_t, uint64_t, DOUBLE)
HISTOGRAM_PASSES(int32_t, uint64_t, DOUBLE)
HISTOGRAM_PASSES(uint32_t, uint64_t, DOUBLE)
HISTOGRAM_PASSES(int64_t, uint64_t, DOUBLE)
HISTOGRAM_PASSES(uint64_t, uint64_t, DOUBLE)

/* Channels of a count-pass tile: their cells within about half the L2 cache. */
static Py_ssize_t count_tile(Py_ssize_t width, int cell_bytes)
{
    Py_ssize_t per_channel = 2 * width * cell_bytes;
    Py_ssize_t tile = per_channel > 0 ? TILE_BYTES / per_channel : 0;
    return tile > 0 ? tile : 1;
}

static const char histogram_window_doc[] =
    "histogram_window(data, code, count, channels, bits, special) -> (low, high)\n\n"
    "The smallest and largest bucket key of the normal finite values of channels-last\n"
    "data (count values, whole rows; low > high when there are none); adds the\n"
    "zero-bucket, tiny, +Inf, -Inf and NaN counts of each channel into special (int64,\n"
    "channels x 5); OverflowError where a sum would pass int64 (the others are added).\n"
    "Raises as rows_moments for bad arguments.";

static PyObject *histogram_window(PyObject *self, PyObject *args)
{
    PyObject *data_object, *special_object;
    const char *code_text;
    Py_ssize_t code_length, count, channels;
    int bits;
    if (!PyArg_ParseTuple(args, "Os#nniO", &data_object, &code_text, &code_length, &count,
                          &channels, &bits, &special_object))
        return NULL;
    char code = type_code(code_text, code_length);
    if (!code)
        return NULL;
    if (channels <= 0 || count < 0 || count % channels || bits < 0 || bits > 20) {
        PyErr_SetString(PyExc_ValueError, "bad channels, count or bits");
        return NULL;
    }
    Py_ssize_t special_items;
    if (size_product(&special_items, channels, 5, 1, 1) < 0)
        return NULL;
    buffer_arg buffers[2] = {
        BUFFER(data_object, "data", code, count, 0),
        BUFFER(special_object, "special", 'q', special_items, 1),
    };
    if (get_buffers(2, buffers) < 0)
        return NULL;
    window_work work;
    if (window_work_new(&work, channels) < 0) {
        release_buffers(2, buffers);
        return NULL;
    }
    uint64_t low = 0, high = 0;
    const void *values = buffers[0].view.buf;
    int64_t *counts = buffers[1].view.buf;
    Py_ssize_t rows = count / channels;
    int passed = 0;
    Py_BEGIN_ALLOW_THREADS
#define WINDOW(TYPE)                                                                       \
    passed = window_##TYPE((const TYPE *)values, rows, channels, bits, &low, &high, counts, \
                           &work)
    DISPATCH(code, WINDOW)
    Py_END_ALLOW_THREADS
    window_work_free(&work);
    release_buffers(2, buffers);
    if (passed) {
        PyErr_SetString(PyExc_OverflowError, "a special count passes int64");
        return NULL;
    }
    return Py_BuildValue("KK", (unsigned long long)low, (unsigned long long)high);
}

static const char histogram_count_doc[] =
    "histogram_count(data, code, count, channels, bits, low, width, counts, cell_bytes)\n\n"
    "Adds one to counts[channel, sign, key - low] (uint16 or uint32 as cell_bytes is 2 or\n"
    "4, channels x 2 x width) for each normal finite value of channels-last data (count\n"
    "values, whole rows, no more rows than a cell holds). The window [low, low + width)\n"
    "lies within the keys of normal finite values, and holds every such key of the data:\n"
    "ValueError otherwise (a value outside is not counted, the others are). Raises as\n"
    "rows_moments for bad arguments.";

static PyObject *histogram_count(PyObject *self, PyObject *args)
{
    PyObject *data_object, *counts_object, *low_object;
    const char *code_text;
    Py_ssize_t code_length, count, channels, width;
    int bits, cell_bytes;
    if (!PyArg_ParseTuple(args, "Os#nniOnOi", &data_object, &code_text, &code_length, &count,
                          &channels, &bits, &low_object, &width, &counts_object, &cell_bytes))
        return NULL;
    char code = type_code(code_text, code_length);
    if (!code)
        return NULL;
    if (channels <= 0 || count < 0 || count % channels || bits < 0 || bits > 20 ||
        width < 0 || (cell_bytes != 2 && cell_bytes != 4)) {
        PyErr_SetString(PyExc_ValueError, "bad channels, count, bits, width or cell size");
        return NULL;
    }
    PyObject *index = PyNumber_Index(low_object);
    if (!index)
        return NULL;
    unsigned long long low = PyLong_AsUnsignedLongLong(index);
    Py_DECREF(index);
    if (low == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    if (low < TINY_DOUBLE || low > HUGE_DOUBLE || (uint64_t)width > HUGE_DOUBLE - low) {
        PyErr_SetString(PyExc_ValueError, "the window [low, low + width) is not within the "
                        "keys of normal finite values");
        return NULL;
    }
    Py_ssize_t rows = count / channels, cells;
    if ((unsigned long long)rows > (cell_bytes == 2 ? 0xffffull : 0xffffffffull)) {
        PyErr_SetString(PyExc_ValueError, "more rows than a cell of cell_bytes counts");
        return NULL;
    }
    if (size_product(&cells, channels, 2, width, 1) < 0)
        return NULL;
    buffer_arg buffers[2] = {
        BUFFER(data_object, "data", code, count, 0),
        BUFFER(counts_object, "counts", cell_bytes == 2 ? 'H' : 'I', cells, 1),
    };
    if (get_buffers(2, buffers) < 0)
        return NULL;
    const void *values = buffers[0].view.buf;
    void *cell_buffer = buffers[1].view.buf;
    Py_ssize_t tile = count_tile(width, cell_bytes);
    int64_t outside = 0;
    Py_BEGIN_ALLOW_THREADS
#define COUNT(TYPE)                                                                        \
    if (cell_bytes == 2)                                                                   \
        outside = count_##TYPE##_uint16_t((const TYPE *)values, rows, channels, bits, low, \
                                          width, cell_buffer, tile);                       \
    else                                                                                   \
        outside = count_##TYPE##_uint32_t((const TYPE *)values, rows, channels, bits, low, \
                                          width, cell_buffer, tile);
    DISPATCH(code, COUNT)
    Py_END_ALLOW_THREADS
    release_buffers(2, buffers);
    if (outside) {
        PyErr_Format(PyExc_ValueError, "%lld values lie outside the window [low, low + width)",
                     (long long)outside);
        return NULL;
    }
    Py_RETURN_NONE;
}

/* ---------------------------------------------------------------------- normalize */

/* y = (x - mean) * factor (+ offset), in float64, rounded once to float32 or float64: the
 * operations of normalize.py in the same order (no contraction), so the bits are equal. */
#define NORMALIZE_ROWS(TYPE, OUT)                                                          \
    VECTOR_CLONES static void normalize_##TYPE##_##OUT(const TYPE *restrict x, Py_ssize_t rows,          \
                                         Py_ssize_t channels, const double *restrict mean, \
                                         const double *restrict factor,                    \
                                         const double *restrict offset, int has_offset,    \
                                         OUT *restrict y)                                  \
    {                                                                                      \
        for (Py_ssize_t r = 0; r < rows; r++) {                                            \
            const TYPE *restrict row = x + r * channels;                                   \
            OUT *restrict out = y + r * channels;                                          \
            if (has_offset)                                                                \
                for (Py_ssize_t c = 0; c < channels; c++)                                  \
                    out[c] = (OUT)(((AS_DOUBLE(TYPE, row[c]) - mean[c]) * factor[c]) + offset[c]);  \
            else                                                                           \
                for (Py_ssize_t c = 0; c < channels; c++)                                  \
                    out[c] = (OUT)((AS_DOUBLE(TYPE, row[c]) - mean[c]) * factor[c]);                \
        }                                                                                  \
    }

#define NORMALIZE_BOTH(TYPE) NORMALIZE_ROWS(TYPE, float) NORMALIZE_ROWS(TYPE, double)
NORMALIZE_BOTH(float)
NORMALIZE_BOTH(double)
NORMALIZE_BOTH(half_t)
NORMALIZE_BOTH(int8_t)
NORMALIZE_BOTH(uint8_t)
NORMALIZE_BOTH(bool8_t)
NORMALIZE_BOTH(int16_t)
NORMALIZE_BOTH(uint16_t)
NORMALIZE_BOTH(int32_t)
NORMALIZE_BOTH(uint32_t)
NORMALIZE_BOTH(int64_t)
NORMALIZE_BOTH(uint64_t)

static const char normalize_rows_doc[] =
    "normalize_rows(data, code, rows, channels, mean, factor, offset, has_offset, out,\n"
    "               out_code)\n\n"
    "out = (x - mean) * factor (+ offset) per channel of channels-last rows, in float64,\n"
    "rounded once to out_code ('f' float32 or 'd' float64): out holds items of that type.\n"
    "Raises as rows_moments for bad arguments.";

static PyObject *normalize_rows(PyObject *self, PyObject *args)
{
    PyObject *objects[5];
    const char *code_text, *out_text;
    Py_ssize_t code_length, out_length, rows, channels;
    int has_offset;
    if (!PyArg_ParseTuple(args, "Os#nnOOOpOs#", &objects[0], &code_text, &code_length, &rows,
                          &channels, &objects[1], &objects[2], &objects[3], &has_offset,
                          &objects[4], &out_text, &out_length))
        return NULL;
    char code = type_code(code_text, code_length);
    if (!code)
        return NULL;
    char out_code = out_length == 1 ? out_text[0] : 0;
    if (rows < 0 || channels <= 0 || (out_code != 'f' && out_code != 'd')) {
        PyErr_SetString(PyExc_ValueError, "bad output type code, rows or channels");
        return NULL;
    }
    Py_ssize_t items;
    if (size_product(&items, rows, channels, 1, 1) < 0)
        return NULL;
    buffer_arg buffers[5] = {
        BUFFER(objects[0], "data", code, items, 0),
        BUFFER(objects[1], "mean", 'd', channels, 0),
        BUFFER(objects[2], "factor", 'd', channels, 0),
        BUFFER(objects[3], "offset", 'd', channels, 0),
        BUFFER(objects[4], "out", out_code, items, 1),
    };
    if (get_buffers(5, buffers) < 0)
        return NULL;
    const void *x = buffers[0].view.buf;
    const double *mean = buffers[1].view.buf, *factor = buffers[2].view.buf;
    const double *offset = buffers[3].view.buf;
    void *y = buffers[4].view.buf;
    Py_BEGIN_ALLOW_THREADS
#define NORMALIZE(TYPE)                                                                    \
    if (out_code == 'f')                                                                   \
        normalize_##TYPE##_float((const TYPE *)x, rows, channels, mean, factor, offset,     \
                                 has_offset, (float *)y);                                  \
    else                                                                                   \
        normalize_##TYPE##_double((const TYPE *)x, rows, channels, mean, factor, offset,    \
                                  has_offset, (double *)y);
    DISPATCH(code, NORMALIZE)
    Py_END_ALLOW_THREADS
    release_buffers(5, buffers);
    Py_RETURN_NONE;
}

/* ---------------------------------------------------------------------- reading */

static const char pread_runs_doc[] =
    "pread_runs(fd, out, offsets, run_bytes) -> int\n\n"
    "Read run_bytes at each byte offset of offsets (int64) of file descriptor fd, one run\n"
    "after another into the writable buffer out, without the GIL. Returns the bytes read:\n"
    "fewer than len(offsets) * run_bytes when the file ends inside a run (the reading stops\n"
    "there). Raises ValueError for a negative offset, OverflowError for a run that passes\n"
    "the largest file offset, OSError for a failed read, and as rows_moments for bad\n"
    "buffers.";

static PyObject *pread_runs(PyObject *self, PyObject *args)
{
    PyObject *out_object, *offsets_object;
    int fd;
    Py_ssize_t run_bytes;
    if (!PyArg_ParseTuple(args, "iOOn", &fd, &out_object, &offsets_object, &run_bytes))
        return NULL;
    if (fd < 0 || run_bytes < 0) {
        PyErr_SetString(PyExc_ValueError, "fd and run_bytes must not be negative");
        return NULL;
    }
    buffer_arg offsets_arg[1] = {BUFFER(offsets_object, "offsets", 'q', -1, 0)};
    if (get_buffers(1, offsets_arg) < 0)
        return NULL;
    Py_ssize_t runs = offsets_arg[0].view.len / 8;
    buffer_arg out_arg[1] = {BUFFER(out_object, "out", 0, 0, 1)};
    if (size_product(&out_arg[0].items, runs, run_bytes, 1, 1) < 0 ||
        get_buffers(1, out_arg) < 0) {
        release_buffers(1, offsets_arg);
        return NULL;
    }
    if (overlap(&offsets_arg[0], &out_arg[0])) {
        release_buffers(1, out_arg);
        release_buffers(1, offsets_arg);
        PyErr_SetString(PyExc_ValueError, "offsets and out share memory");
        return NULL;
    }
    const int64_t *offsets = offsets_arg[0].view.buf;
    char *out = out_arg[0].view.buf;
    Py_ssize_t done = 0;
    int error = 0, negative = 0, past = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t run = 0; run < runs && !error; run++) {
        int64_t at = offsets[run];
        negative = at < 0;
        past = at > LLONG_MAX - run_bytes;
        if (negative || past)
            break;
        Py_ssize_t got = read_at(fd, out + run * run_bytes, run_bytes, at, &error);
        done += got;
        if (got < run_bytes)
            break;
    }
    Py_END_ALLOW_THREADS
    release_buffers(1, out_arg);
    release_buffers(1, offsets_arg);
    if (negative || past) {
        PyErr_SetString(negative ? PyExc_ValueError : PyExc_OverflowError,
                        negative ? "an offset is negative"
                                 : "a run passes the largest file offset");
        return NULL;
    }
    if (error) {
        errno = error;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromSsize_t(done);
}

/* ------------------------------------------------------------------------- module */

static PyMethodDef methods[] = {
    {"rows_moments", rows_moments, METH_VARARGS, rows_moments_doc},
    {"columns_moments", columns_moments, METH_VARARGS, columns_moments_doc},
    {"pread_runs", pread_runs, METH_VARARGS, pread_runs_doc},
    {"histogram_window", histogram_window, METH_VARARGS, histogram_window_doc},
    {"histogram_count", histogram_count, METH_VARARGS, histogram_count_doc},
    {"normalize_rows", normalize_rows, METH_VARARGS, normalize_rows_doc},
    {"slab_moments", slab_moments, METH_VARARGS, slab_moments_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "bncli._kernel",
    "The compiled block kernels of bncli (see bncli.kernel).", -1, methods,
};

PyMODINIT_FUNC PyInit__kernel(void)
{
    fill_half_values();
    return PyModule_Create(&module);
}
