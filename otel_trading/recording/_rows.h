/* The rows' compiled histogram update, shared by every compiled module of otel-trading.
 *
 * ``otel_trading.recording._fast_rows`` (the own components' update) and every library home's
 * ``_hooks`` (through ``instrumentation/_core/hot_path.h``) include this header: the row layout of
 * ``otel_trading.recording.rows`` (set by ``configure``), the one histogram update (``observe_row``)
 * and the check of OpenTelemetry's current context (``context_held``). Everything is static: each
 * module has its own copy and its own configuration. Only for the GIL build: the statics and the
 * rows are guarded by the GIL.
 */
#ifndef OTEL_TRADING_ROWS_H
#define OTEL_TRADING_ROWS_H

#ifndef PY_SSIZE_T_CLEAN
#define PY_SSIZE_T_CLEAN
#endif
#include <Python.h>

/* A module keeps statics: it refuses to be loaded in a second interpreter (slot list entry). */
#if PY_VERSION_HEX >= 0x030C0000
#define ONE_INTERPRETER_SLOT {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED},
#else
#define ONE_INTERPRETER_SLOT
#endif

/* -- the histogram update: the row layout, set once by configure() from otel_trading.recording.rows -- */
static Py_ssize_t I_SUM = -1, I_MIN, I_MAX, I_B0, N_BOUNDS;
static double *BOUNDS_C = NULL;

/* Add ``value`` to a row's histogram columns (count implied by the buckets), as ``rows.observe`` does:
 * the one histogram update of the compiled paths. 0 on success; -1 with no exception set when ``row``
 * is not a row of the configured layout (its width, or its columns' types) or memory ran out. */
static inline int observe_row(PyObject *row, double value) {
    if (I_SUM < 0 || !PyList_CheckExact(row) || PyList_GET_SIZE(row) != I_B0 + N_BOUNDS + 1) {
        return -1;
    }
    PyObject *sum = PyList_GET_ITEM(row, I_SUM);
    PyObject *low = PyList_GET_ITEM(row, I_MIN);
    PyObject *high = PyList_GET_ITEM(row, I_MAX);
    if (!PyFloat_CheckExact(sum) || !PyFloat_CheckExact(low) || !PyFloat_CheckExact(high)) {
        return -1;
    }
    Py_ssize_t lo = 0, hi = N_BOUNDS; /* bisect_left: the first bound >= value */
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        if (BOUNDS_C[mid] < value) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    PyObject *bucket = PyList_GET_ITEM(row, I_B0 + lo);
    if (!PyLong_CheckExact(bucket)) {
        return -1;
    }
    Py_ssize_t count = PyLong_AsSsize_t(bucket);
    if (count == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return -1;
    }
    int fresh_low = value < PyFloat_AS_DOUBLE(low), fresh_high = value > PyFloat_AS_DOUBLE(high);
    PyObject *new_sum = PyFloat_FromDouble(PyFloat_AS_DOUBLE(sum) + value);
    PyObject *new_bucket = PyLong_FromSsize_t(count + 1);
    PyObject *new_low = fresh_low ? PyFloat_FromDouble(value) : NULL;
    PyObject *new_high = fresh_high ? PyFloat_FromDouble(value) : NULL;
    if (new_sum == NULL || new_bucket == NULL || (fresh_low && new_low == NULL) ||
        (fresh_high && new_high == NULL)) {
        Py_XDECREF(new_sum);
        Py_XDECREF(new_bucket);
        Py_XDECREF(new_low);
        Py_XDECREF(new_high);
        PyErr_Clear();
        return -1;
    }
    /* Nothing below runs Python code (the old items are a float and an int), so no other thread
     * can see the row between these stores. */
    PyList_SetItem(row, I_SUM, new_sum);
    PyList_SetItem(row, I_B0 + lo, new_bucket);
    if (new_low != NULL) {
        PyList_SetItem(row, I_MIN, new_low);
    }
    if (new_high != NULL) {
        PyList_SetItem(row, I_MAX, new_high);
    }
    return 0;
}

/* -- OpenTelemetry's current context: is there a span (an exemplar candidate)? ------------------------
 * A duration gets a trace exemplar only when OpenTelemetry's current Context (a dict) is not empty (a
 * span is current: whether it is sampled, and the provider's exemplar filter, are Python's to weigh).
 * ``context_held()`` answers that: a hook asks it once, at the entry of a call, and hands the whole
 * call to its pure-Python twin when it is true; ``_fast_rows.record`` returns it, and its caller
 * offers the exemplar. The Context is the value of a ContextVar (``opentelemetry.context.
 * _RUNTIME_CONTEXT._current_context``, when the runtime context is the contextvars one), set by
 * configure(); with none set, it is never looked at. */
static PyObject *OTEL_CONTEXT = NULL; /* strong: the ContextVar, or NULL */

/* True when the configured ContextVar's value is a non-empty dict (or could not be read: Python then
 * decides as it always does). One ContextVar lookup (cached per thread by CPython). */
static inline int context_held(void) {
    if (OTEL_CONTEXT == NULL) {
        return 0;
    }
    PyObject *value;
    if (PyContextVar_Get(OTEL_CONTEXT, NULL, &value) < 0) {
        PyErr_Clear();
        return 1;
    }
    if (value == NULL) { /* no value, and the variable has no default */
        return 0;
    }
    int held = PyDict_Check(value) && PyDict_GET_SIZE(value) > 0;
    Py_DECREF(value);
    return held;
}

/* configure(bounds, sum, min, max, b0, context=None): the row layout every update of this module
 * writes, and the ContextVar of OpenTelemetry's current Context (None, or left out: never looked at).
 * Everything is checked before anything changes. */
static inline PyObject *configure(PyObject *module, PyObject *args) {
    PyObject *bounds, *context = Py_None;
    Py_ssize_t i_sum, i_min, i_max, i_b0;
    if (!PyArg_ParseTuple(args, "O!nnnn|O:configure", &PyTuple_Type, &bounds, &i_sum, &i_min, &i_max, &i_b0,
                          &context)) {
        return NULL;
    }
    if (context != Py_None && !PyContextVar_CheckExact(context)) {
        PyErr_Format(PyExc_TypeError,
                     "configure(): 'context' (the 6th argument) must be a contextvars.ContextVar or None, not %.200s",
                     Py_TYPE(context)->tp_name);
        return NULL;
    }
    /* observe_row checks a row's width against I_B0 + the bounds: every column must come before. */
    if (i_sum < 0 || i_min < 0 || i_max < 0 || i_sum >= i_b0 || i_min >= i_b0 || i_max >= i_b0 ||
        i_sum == i_min || i_sum == i_max || i_min == i_max) {
        PyErr_SetString(PyExc_ValueError, "configure: sum, min and max must be distinct columns before b0");
        return NULL;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(bounds);
    double *values = PyMem_Calloc(n > 0 ? n : 1, sizeof(double));
    if (values == NULL) {
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        values[i] = PyFloat_AsDouble(PyTuple_GET_ITEM(bounds, i));
        if (values[i] == -1.0 && PyErr_Occurred()) {
            PyMem_Free(values);
            return NULL;
        }
        if (i > 0 && !(values[i] > values[i - 1])) {
            PyMem_Free(values);
            PyErr_SetString(PyExc_ValueError, "configure: bounds must increase");
            return NULL;
        }
    }
    PyMem_Free(BOUNDS_C);
    BOUNDS_C = values;
    N_BOUNDS = n;
    I_MIN = i_min;
    I_MAX = i_max;
    I_B0 = i_b0;
    I_SUM = i_sum;
    /* Last: dropping the previous variable may run Python code, which sees the new layout. */
    Py_XSETREF(OTEL_CONTEXT, context != Py_None ? Py_NewRef(context) : NULL);
    Py_RETURN_NONE;
}

#endif /* OTEL_TRADING_ROWS_H */
