/* circuitbreaker's compiled hot path: ``CircuitBreaker.call`` (``guarded_call``). Its pure-Python
 * twin is ``call`` in ``circuitbreaker/hooks.py`` (``CircuitbreakerBreakers._call``), which this hook
 * hands every call it does not serve itself.
 *
 * What it relies on of circuitbreaker (module tuple ``RELIES_ON``):
 *   breaker._state              the state a call starts in (the fast path: ``STATE_CLOSED``)
 *   breaker.__enter__/__exit__  the breaker's ``with`` protocol, around the guarded call
 *
 * What it reads of otel-trading's objects, at slot offsets checked by the factory:
 *   entry_type (_Entry)   local (its rows' threading.local, whose ``row`` is the thread's row), hot
 *   series_type (Series)  fast
 */
#define HOOKS_MODULE "otel_trading.instrumentation.circuitbreaker._hooks"
#include "hot_path.h"

static const char *const RELIES_ON[] = {"_state", "__enter__", "__exit__", NULL};

static PyObject *S__state;

/* -- guarded_call: circuitbreaker's ``call(self, func, *args, **kwargs)`` ------------------------
 * Fast path: a known breaker whose ``_state`` is ``closed``, whose series is hot and whose row in
 * this thread exists; the block ``with breaker: func(*args, **kwargs)`` runs here, timed. A raising
 * block goes to ``raised(breaker, entry, start, exc, True)`` and on unchanged. */
typedef struct {
    Hook hook;
    PyObject *entries; /* id(breaker) -> entry */
    PyObject *closed;  /* the library's closed state value */
    PyObject *raised;  /* the twin's ``raised(breaker, entry, start, exc, closed)`` */
    PyObject *record;  /* the twin's ``record(entry, elapsed)``, for a row it could not update */
    EntryLayout entry;
    SeriesLayout series;
    SpecialCache specials;
    RowCache rows;
} GuardedCall;

static int guarded_call_traverse(PyObject *op, visitproc visit, void *arg) {
    GuardedCall *h = (GuardedCall *)op;
    Py_VISIT(h->entries);
    Py_VISIT(h->closed);
    Py_VISIT(h->raised);
    Py_VISIT(h->record);
    Py_VISIT(h->entry.type);
    Py_VISIT(h->series.type);
    Py_VISIT(h->specials.enter);
    Py_VISIT(h->specials.exit);
    Py_VISIT(h->rows.local);
    Py_VISIT(h->rows.row);
    return hook_traverse(op, visit, arg);
}

static int guarded_call_clear(PyObject *op) {
    GuardedCall *h = (GuardedCall *)op;
    Py_CLEAR(h->entries);
    Py_CLEAR(h->closed);
    Py_CLEAR(h->raised);
    Py_CLEAR(h->record);
    Py_CLEAR(h->entry.type);
    Py_CLEAR(h->series.type);
    Py_CLEAR(h->specials.enter);
    Py_CLEAR(h->specials.exit);
    Py_CLEAR(h->rows.local);
    Py_CLEAR(h->rows.row);
    h->specials.type = NULL;
    return hook_clear(op);
}

static PyTypeObject GuardedCallType =
    HOOK_KIND(GuardedCall, "circuitbreaker's CircuitBreaker.call, compiled.", guarded_call_traverse, guarded_call_clear);

static PyObject *guarded_call(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    GuardedCall *h = (GuardedCall *)op;
    HOOK_CALLED(h);
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs < 2 || names_a_parameter(kwnames)) {
        return SLOW(h);
    }
    PyObject *breaker = args[0], *func = args[1];
    PyObject *entry = Py_XNewRef(by_id(h->entries, breaker));
    PyObject *local = entry != NULL ? hot_local(&h->entry, &h->series, entry) : NULL;
    PyObject *row = local != NULL ? thread_row(&h->rows, local) : NULL;
    Py_XDECREF(local);
    if (row == NULL) {
        Py_XDECREF(entry);
        return SLOW(h);
    }
    PyObject *state = PyObject_GetAttr(breaker, S__state);
    if (state == NULL) {
        PyErr_Clear();
    }
    int fast = state == h->closed;
    Py_XDECREF(state);
    PyObject *enter = NULL, *exit = NULL;
    if (fast && specials(&h->specials, breaker, &enter, &exit) < 0) {
        PyErr_Clear(); /* the twin raises what ``with`` raises */
        fast = 0;
    }
    if (!fast) {
        Py_DECREF(row);
        Py_DECREF(entry);
        return SLOW(h);
    }
    PyObject *result = NULL, *error = NULL;
    double start = now();
    PyObject *entered = call_special(enter, breaker, NULL, 0);
    if (entered == NULL) { /* the block never started: as ``with``, no __exit__ */
        error = take_error();
        goto raised;
    }
    Py_DECREF(entered);
    result = PyObject_Vectorcall(func, args + 2, nargs - 2, kwnames);
    if (result == NULL) {
        error = take_error();
        int suppressed = exit_with_error(exit, breaker, error);
        if (suppressed < 0) { /* __exit__ raised: its exception goes on (chained to the block's) */
            Py_DECREF(error);
            error = take_error();
        } else if (suppressed > 0) { /* as the library's ``with self: return ...`` running off its end */
            PyObject *raised_args[5] = {breaker, entry, NULL, error, Py_True};
            bookkeep_at(h->raised, raised_args, 5, 2, start);
            Py_DECREF(error);
            result = Py_NewRef(Py_None);
            goto done;
        }
        goto raised;
    }
    if (exit_normally(exit, breaker) < 0) {
        Py_CLEAR(result);
        error = take_error();
        goto raised;
    }
    record_success(row, entry, h->record, now() - start);
    goto done;
raised: {
    PyObject *raised_args[5] = {breaker, entry, NULL, error, Py_True};
    bookkeep_at(h->raised, raised_args, 5, 2, start);
    give_error(error);
}
done:
    Py_DECREF(enter);
    Py_DECREF(exit);
    Py_DECREF(row);
    Py_DECREF(entry);
    return result;
}

static PyObject *make_guarded_call(PyObject *module, PyObject *args, PyObject *kwargs) {
    const Field fields[] = {
        {"slow", offsetof(GuardedCall, hook.slow), CALLABLE, NULL},
        {"entries", offsetof(GuardedCall, entries), EXACTLY, &PyDict_Type},
        {"closed", offsetof(GuardedCall, closed), ANY, NULL},
        {"raised", offsetof(GuardedCall, raised), CALLABLE, NULL},
        {"record", offsetof(GuardedCall, record), CALLABLE, NULL},
        {"entry_type", offsetof(GuardedCall, entry.type), A_CLASS, NULL},
        {"series_type", offsetof(GuardedCall, series.type), A_CLASS, NULL},
        {NULL, 0, ANY, NULL},
    };
    PyObject *op = hook_new(&GuardedCallType, guarded_call, "guarded_call", fields, args, kwargs);
    if (op == NULL) {
        return NULL;
    }
    GuardedCall *h = (GuardedCall *)op;
    if (entry_layout(&h->entry, "guarded_call", "entry_type", (PyObject *)h->entry.type) < 0 ||
        series_layout(&h->series, "guarded_call", (PyObject *)h->series.type) < 0) {
        Py_DECREF(op);
        return NULL;
    }
    return hook_ready(op);
}

/* -- the module ------------------------------------------------------------------------------------ */
static PyMethodDef hooks_methods[] = {
    HOT_PATH_METHODS,
    FACTORY_METHOD(guarded_call, "guarded_call(*, slow, entries, closed, raised, record, entry_type, series_type): "
                                 "circuitbreaker's CircuitBreaker.call."),
    {NULL, NULL, 0, NULL},
};

static int hooks_exec(PyObject *module) {
    if (intern_name(&S__state, "_state") < 0 || hot_path_exec(module, RELIES_ON) < 0 ||
        PyModule_AddType(module, &GuardedCallType) < 0) {
        return -1;
    }
    return 0;
}

static PyModuleDef_Slot hooks_slots[] = {
    {Py_mod_exec, hooks_exec},
#if PY_VERSION_HEX >= 0x030C0000
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED},
#endif
    /* No Py_mod_gil: the statics and the rows are only safe under the GIL. */
    {0, NULL},
};

static struct PyModuleDef hooks_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = HOOKS_MODULE,
    .m_doc = "circuitbreaker's compiled hot path (CircuitBreaker.call).",
    .m_size = 0, /* no per-module state (multi-phase initialisation needs it non-negative) */
    .m_methods = hooks_methods,
    .m_slots = hooks_slots,
};

PyMODINIT_FUNC PyInit__hooks(void) { return PyModuleDef_Init(&hooks_module); }
