/* The own components' compiled histogram update: ``otel_trading.recording._fast_rows``.
 *
 * ``CircuitBreaker`` and ``EventBus`` record a timed call's duration into their row inline, then ask
 * whether OpenTelemetry's current context is empty (a ContextVar.get) before offering an exemplar.
 * In Python those are about ten bytecodes and a method call; ``record(row, value)`` does both in one
 * C call, with the update and the context check the library hooks use (``_rows.h``). The loader is
 * ``fast_rows.py``; without this module (no compiler, OTEL_TRADING_PURE_PYTHON=true, free-threaded)
 * the components keep their inline Python.
 *
 * Only for the GIL build: the layout is static, the rows are updated under the GIL (setup.py builds
 * no module on a free-threaded interpreter, and the loader would not use one).
 */
#define PY_SSIZE_T_CLEAN
#include "_rows.h"

/* record(row, value) -> bool | None: see the method's doc below. */
static PyObject *record(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "record(row, value) takes 2 arguments");
        return NULL;
    }
    double value = PyFloat_CheckExact(args[1]) ? PyFloat_AS_DOUBLE(args[1]) : PyFloat_AsDouble(args[1]);
    if (value == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    if (observe_row(args[0], value) != 0) {
        Py_RETURN_NONE; /* not a row of the layout: the caller records in Python */
    }
    return PyBool_FromLong(context_held());
}

static PyMethodDef fast_rows_methods[] = {
    {"configure", configure, METH_VARARGS,
     "configure(bounds, sum, min, max, b0, context=None): the row layout record() writes, and the "
     "contextvars.ContextVar of OpenTelemetry's current Context (None: record() always returns False)."},
    {"record", (PyCFunction)(void (*)(void))record, METH_FASTCALL,
     "record(row, value) -> bool | None: add value to the row's histogram columns (as "
     "otel_trading.recording.rows.observe does) and return whether OpenTelemetry's current Context is "
     "not empty (an exemplar candidate); None, with nothing recorded, when row is not a row of the "
     "configured layout."},
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
