/* The own components' compiled histogram update: ``otel_trading.recording._fast_rows``.
 *
 * ``CircuitBreaker`` and ``EventBus`` record a timed call's duration into their row inline, then ask
 * whether OpenTelemetry's current context is empty (a ContextVar.get) before offering an exemplar.
 * In Python those are about ten bytecodes and a method call; ``record(row, value)`` does both in one
 * C call, with the update and the context check the library hooks use (``_rows.h``).
 * ``record_exponential(row, value)`` does the same for a row that also keeps exponential buckets (an
 * "epoch"), adding to the epoch too unless it must be rescaled (Python does that). The loader is
 * ``fast_rows.py``; without this module (no compiler, OTEL_TRADING_PURE_PYTHON=true, free-threaded)
 * the components keep their inline Python.
 *
 * Only for the GIL build: the layout is static, the rows are updated under the GIL (setup.py builds
 * no module on a free-threaded interpreter, and the loader would not use one).
 */
#define PY_SSIZE_T_CLEAN
#include "_rows.h"

#include <float.h>
#include <math.h>

/* The (row, value) arguments of record and record_exponential: 0 with *value set, or -1 with an exception. */
static int row_and_value(const char *name, PyObject *const *args, Py_ssize_t nargs, double *value) {
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "%s(row, value) takes 2 arguments", name);
        return -1;
    }
    *value = PyFloat_CheckExact(args[1]) ? PyFloat_AS_DOUBLE(args[1]) : PyFloat_AsDouble(args[1]);
    return *value == -1.0 && PyErr_Occurred() ? -1 : 0;
}

/* record(row, value) -> bool | None: see the method's doc below. */
static PyObject *record(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    double value;
    if (row_and_value("record", args, nargs, &value) < 0) {
        return NULL;
    }
    if (observe_row(args[0], value) != 0) {
        Py_RETURN_NONE; /* not a row of the layout: the caller records in Python */
    }
    return PyBool_FromLong(context_held());
}

/* -- a row's exponential epoch (``recording.exponential``): its layout, set by configure_epochs() -- */
static Py_ssize_t I_EPOCH = -1, E_FACTOR, E_LO, E_HI, E_ZERO, E_SUM, E_COUNTS, E_WIDTH;

/* configure_epochs(column, width, factor, lo, hi, zero, sum, counts): the row column holding the epoch,
 * the epoch's length and its fields' indices. Everything is checked before anything changes. */
static PyObject *configure_epochs(PyObject *module, PyObject *args) {
    Py_ssize_t column, width, f[6];
    if (!PyArg_ParseTuple(args, "nnnnnnnn:configure_epochs", &column, &width, &f[0], &f[1], &f[2], &f[3], &f[4],
                          &f[5])) {
        return NULL;
    }
    if (I_SUM < 0 || column < 0 || column >= I_B0 || column == I_SUM || column == I_MIN || column == I_MAX) {
        PyErr_SetString(PyExc_ValueError, "configure_epochs: configure() first; column must be free and before b0");
        return NULL;
    }
    for (int i = 0; i < 6; i++) {
        for (int j = 0; j < i; j++) {
            if (f[i] == f[j]) {
                PyErr_SetString(PyExc_ValueError, "configure_epochs: the fields must be distinct");
                return NULL;
            }
        }
        if (f[i] < 0 || f[i] >= width) {
            PyErr_SetString(PyExc_ValueError, "configure_epochs: every field must be inside the width");
            return NULL;
        }
    }
    E_FACTOR = f[0], E_LO = f[1], E_HI = f[2], E_ZERO = f[3], E_SUM = f[4], E_COUNTS = f[5];
    E_WIDTH = width;
    I_EPOCH = column;
    Py_RETURN_NONE;
}

/* configure() of _rows.h for this module: a new row layout forgets the epoch layout configured on
 * the old one (configure_epochs() again), so record_exponential never reads a column that moved. */
static PyObject *configure_rows(PyObject *module, PyObject *args) {
    PyObject *result = configure(module, args);
    if (result != NULL) {
        I_EPOCH = -1;
    }
    return result;
}

/* Add ``value`` to the row's epoch where that needs no rescale: zero, or a bucket inside the epoch's
 * range away from a power of two (where the SDK's exact rule applies). 1 when added; 0 when Python must
 * add it (under the series lock); nothing is changed then. The rule is the inline Python's of
 * ``Series.observe_slow``, with the same libm log, so the index agrees bit for bit. Nothing here runs
 * Python code: under the GIL, a collection sees the epoch before or after, never in between. */
static int observe_epoch(PyObject *row, double value) {
    if (I_EPOCH < 0 || I_EPOCH >= PyList_GET_SIZE(row)) {
        return 0;
    }
    PyObject *e = PyList_GET_ITEM(row, I_EPOCH);
    if (!PyList_CheckExact(e) || PyList_GET_SIZE(e) != E_WIDTH) {
        return 0; /* None: no epoch yet */
    }
    if (value == 0.0) {
        PyObject *zero = PyList_GET_ITEM(e, E_ZERO), *sum = PyList_GET_ITEM(e, E_SUM);
        if (!PyLong_CheckExact(zero) || !PyFloat_CheckExact(sum)) {
            return 0;
        }
        Py_ssize_t n = PyLong_AsSsize_t(zero);
        if (n == -1 && PyErr_Occurred()) {
            PyErr_Clear();
            return 0;
        }
        PyObject *new_zero = PyLong_FromSsize_t(n + 1);
        PyObject *new_sum = PyFloat_FromDouble(PyFloat_AS_DOUBLE(sum) + value);
        if (new_zero == NULL || new_sum == NULL) {
            Py_XDECREF(new_zero);
            Py_XDECREF(new_sum);
            PyErr_Clear();
            return 0;
        }
        PyList_SetItem(e, E_ZERO, new_zero);
        PyList_SetItem(e, E_SUM, new_sum);
        return 1;
    }
    if (!(value > DBL_MIN)) {
        return 0; /* negative, subnormal or NaN: the full rule */
    }
    PyObject *factor = PyList_GET_ITEM(e, E_FACTOR), *sum = PyList_GET_ITEM(e, E_SUM);
    PyObject *lo = PyList_GET_ITEM(e, E_LO), *hi = PyList_GET_ITEM(e, E_HI), *counts = PyList_GET_ITEM(e, E_COUNTS);
    if (!PyFloat_CheckExact(factor) || !PyFloat_CheckExact(sum) || !PyLong_CheckExact(lo) || !PyLong_CheckExact(hi) ||
        !PyDict_CheckExact(counts)) {
        return 0;
    }
    double x = log(value) * PyFloat_AS_DOUBLE(factor);
    double floored = floor(x);
    if (!(x - floored >= 1e-6)) {
        return 0;
    }
    long long index = (long long)floored;
    long long low = PyLong_AsLongLong(lo);
    if (low == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    long long high = PyLong_AsLongLong(hi);
    if (high == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    if (index < low || index > high) {
        return 0;
    }
    PyObject *key = PyLong_FromLongLong(index);
    if (key == NULL) {
        PyErr_Clear();
        return 0;
    }
    long long count = 0;
    PyObject *old = PyDict_GetItemWithError(counts, key); /* borrowed; an int key runs no Python code */
    if (old != NULL) {
        if (!PyLong_CheckExact(old) || ((count = PyLong_AsLongLong(old)) == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            Py_DECREF(key);
            return 0;
        }
    } else if (PyErr_Occurred()) {
        PyErr_Clear();
        Py_DECREF(key);
        return 0;
    }
    PyObject *new_count = PyLong_FromLongLong(count + 1);
    PyObject *new_sum = PyFloat_FromDouble(PyFloat_AS_DOUBLE(sum) + value);
    if (new_count == NULL || new_sum == NULL || PyDict_SetItem(counts, key, new_count) < 0) {
        Py_XDECREF(new_count);
        Py_XDECREF(new_sum);
        Py_DECREF(key);
        PyErr_Clear();
        return 0;
    }
    Py_DECREF(new_count);
    Py_DECREF(key);
    PyList_SetItem(e, E_SUM, new_sum);
    return 1;
}

/* record_exponential(row, value) -> int | None: see the method's doc below. */
static PyObject *record_exponential(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    double value;
    if (row_and_value("record_exponential", args, nargs, &value) < 0) {
        return NULL;
    }
    if (I_EPOCH < 0 || observe_row(args[0], value) != 0) {
        Py_RETURN_NONE;
    }
    /* The epoch right after the row (context_held may allocate, and so collect garbage). */
    long left_to_python = observe_epoch(args[0], value) ? 0 : 2;
    return PyLong_FromLong(left_to_python | context_held());
}

static PyMethodDef fast_rows_methods[] = {
    {"configure", configure_rows, METH_VARARGS,
     "configure(bounds, sum, min, max, b0, context=None): the row layout record() writes, and the "
     "contextvars.ContextVar of OpenTelemetry's current Context (None: record() always returns False)."},
    {"record", (PyCFunction)(void (*)(void))record, METH_FASTCALL,
     "record(row, value) -> bool | None: add value to the row's histogram columns (as "
     "otel_trading.recording.rows.observe does) and return whether OpenTelemetry's current Context is "
     "not empty (an exemplar candidate); None, with nothing recorded, when row is not a row of the "
     "configured layout."},
    {"configure_epochs", configure_epochs, METH_VARARGS,
     "configure_epochs(column, width, factor, lo, hi, zero, sum, counts): the row column of the "
     "exponential epoch, the epoch's length and its fields' indices (otel_trading.recording.exponential), "
     "after configure()."},
    {"record_exponential", (PyCFunction)(void (*)(void))record_exponential, METH_FASTCALL,
     "record_exponential(row, value) -> int | None: record() for a row that also keeps exponential "
     "buckets. Adds value to the row's histogram columns and, where no rescale is needed, to its epoch; "
     "returns 1 | 0 (whether OpenTelemetry's current Context is not empty) plus 2 when the epoch was "
     "left for Python to update (under the series lock); None, with nothing recorded, when row is not "
     "a row of the configured layout or configure_epochs() was not called."},
    {NULL, NULL, 0, NULL},
};

/* Multi-phase initialisation, no per-module state (the layout is static, hence one interpreter), and
 * no Py_mod_gil: the statics and the rows are only safe under the GIL. */
static PyModuleDef_Slot fast_rows_slots[] = {ONE_INTERPRETER_SLOT{0, NULL}};

static struct PyModuleDef fast_rows_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "otel_trading.recording._fast_rows",
    .m_doc = "The own components' compiled histogram update, and whether OpenTelemetry's context holds a span.",
    .m_size = 0,
    .m_methods = fast_rows_methods,
    .m_slots = fast_rows_slots,
};

PyMODINIT_FUNC PyInit__fast_rows(void) { return PyModuleDef_Init(&fast_rows_module); }
