/* pybreaker's compiled hot path: ``CircuitBreaker.call`` (``locked_call``). Its pure-Python twin is
 * ``call`` in ``_core/state_object_breakers.py`` (``LibraryBreakers._locked_call``), which this hook
 * hands every call it does not serve itself.
 *
 * What it relies on of pybreaker (module tuple ``RELIES_ON``; the shape checked before patching is
 * the Family's ``locked_call``):
 *   breaker._lock            the lock ``call`` takes (also the key of the bindings table)
 *   breaker.state            the state object, read under the lock
 *   state.call               the state's guarded call, run under the lock
 *   _lock.__enter__/__exit__ the lock's ``with`` protocol
 *
 * What it reads of otel-trading's objects, at slot offsets checked by the factory:
 *   binding_type (BreakerBinding)  exclusive (the row only written under the breaker's lock), hot
 *   series_type (Series)           fast
 */
#define HOOKS_MODULE "otel_trading.instrumentation.pybreaker._hooks"
#include "hot_path.h"

static const char *const RELIES_ON[] = {"_lock", "state", "call", "__enter__", "__exit__", NULL};

static PyObject *S__lock, *S_state, *S_call;

/* -- locked_call: pybreaker's ``CircuitBreaker.call(self, func, *args, **kwargs)`` -------------------
 * The library's ``with self._lock: return self.state.call(func, *args, **kwargs)`` (the shape the
 * Python side checked), timed: a closed or half-open state's call is one histogram update of the
 * binding's exclusive row (only ever written under this lock); an open state's call is the
 * rejection the patched ``before_call`` counts; a raising call goes to ``after_error`` under the
 * lock, as in the twin. A breaker with no binding goes to the twin. */
typedef struct {
    Hook hook;
    PyObject *bindings;    /* breaker._lock -> binding */
    PyObject *open_state;  /* the open state class */
    PyObject *after_error; /* the twin's ``after_error(breaker, start)`` */
    PyObject *record;      /* the twin's ``record(binding, elapsed)``, for a series not bound to the rows */
    PyObject *generator;   /* types.GeneratorType: a generator's outcome comes at its end */
    struct {
        PyTypeObject *type; /* strong */
        Py_ssize_t exclusive, hot;
    } binding;
    SeriesLayout series;
    SpecialCache specials;
} LockedCall;

static int locked_call_traverse(PyObject *op, visitproc visit, void *arg) {
    LockedCall *h = (LockedCall *)op;
    Py_VISIT(h->bindings);
    Py_VISIT(h->open_state);
    Py_VISIT(h->after_error);
    Py_VISIT(h->record);
    Py_VISIT(h->generator);
    Py_VISIT(h->binding.type);
    Py_VISIT(h->series.type);
    Py_VISIT(h->specials.enter);
    Py_VISIT(h->specials.exit);
    return hook_traverse(op, visit, arg);
}

static int locked_call_clear(PyObject *op) {
    LockedCall *h = (LockedCall *)op;
    Py_CLEAR(h->bindings);
    Py_CLEAR(h->open_state);
    Py_CLEAR(h->after_error);
    Py_CLEAR(h->record);
    Py_CLEAR(h->generator);
    Py_CLEAR(h->binding.type);
    Py_CLEAR(h->series.type);
    Py_CLEAR(h->specials.enter);
    Py_CLEAR(h->specials.exit);
    h->specials.type = NULL;
    return hook_clear(op);
}

static PyTypeObject LockedCallType =
    HOOK_KIND(LockedCall, "pybreaker's CircuitBreaker.call, compiled.", locked_call_traverse, locked_call_clear);

static PyObject *locked_call(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    LockedCall *h = (LockedCall *)op;
    HOOK_CALLED(h);
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    Py_ssize_t nkw = kwnames != NULL ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs < 2 || nargs + nkw > 16 || names_a_parameter(kwnames)) {
        return SLOW(h);
    }
    PyObject *breaker = args[0];
    PyObject *lock = PyObject_GetAttr(breaker, S__lock);
    if (lock == NULL) {
        PyErr_Clear();
        return SLOW(h);
    }
    PyObject *binding = PyDict_GetItemWithError(h->bindings, lock); /* borrowed */
    if (binding == NULL || !Py_IS_TYPE(binding, h->binding.type)) {
        PyErr_Clear();
        Py_DECREF(lock);
        return SLOW(h);
    }
    Py_INCREF(binding);
    PyObject *enter, *exit;
    if (specials(&h->specials, lock, &enter, &exit) < 0) {
        PyErr_Clear(); /* the twin raises what ``with`` raises */
        Py_DECREF(binding);
        Py_DECREF(lock);
        return SLOW(h);
    }
    PyObject *entered = call_special(enter, lock, NULL, 0);
    Py_DECREF(enter);
    if (entered == NULL) {
        Py_DECREF(binding);
        Py_DECREF(exit);
        Py_DECREF(lock);
        return NULL;
    }
    Py_DECREF(entered);
    PyObject *result = NULL, *error = NULL;
    PyObject *state = PyObject_GetAttr(breaker, S_state);
    if (state == NULL) {
        error = take_error();
        goto leave;
    }
    /* state.call(func, *args, **kwargs) */
    PyObject *call_args[16];
    call_args[0] = state;
    for (Py_ssize_t i = 1; i < nargs + nkw; i++) {
        call_args[i] = args[i];
    }
    if (Py_TYPE(state) == (PyTypeObject *)h->open_state) { /* open: a rejection, or a half-open trial */
        result = PyObject_VectorcallMethod(S_call, call_args, (size_t)nargs, kwnames);
        if (result == NULL) {
            error = take_error();
        }
        goto leave;
    }
    double start = now();
    result = PyObject_VectorcallMethod(S_call, call_args, (size_t)nargs, kwnames);
    if (result == NULL) {
        error = take_error();
        PyObject *after_args[2] = {breaker, NULL};
        bookkeep_at(h->after_error, after_args, 2, 1, start);
        goto leave;
    }
    if (Py_TYPE(result) == (PyTypeObject *)h->generator) { /* a generator's outcome comes at its end */
        goto leave;
    }
    double elapsed = now() - start;
    PyObject *row = SLOT(binding, h->binding.exclusive), *hot = SLOT(binding, h->binding.hot);
    if (row == NULL || hot == NULL || !is_fast(&h->series, hot) || observe_row(row, elapsed) != 0) {
        PyObject *record_args[2] = {binding, NULL};
        bookkeep_at(h->record, record_args, 2, 1, elapsed);
    }
leave:
    Py_XDECREF(state);
    Py_DECREF(binding);
    if (error != NULL) {
        int suppressed = exit_with_error(exit, lock, error);
        if (suppressed > 0) { /* ``with self._lock: return ...`` running off its end */
            Py_DECREF(error);
            result = Py_NewRef(Py_None);
        } else if (suppressed < 0) {
            Py_DECREF(error);
        } else {
            give_error(error);
        }
    } else if (exit_normally(exit, lock) < 0) {
        Py_CLEAR(result);
    }
    Py_DECREF(exit);
    Py_DECREF(lock);
    return result;
}

static PyObject *make_locked_call(PyObject *module, PyObject *args, PyObject *kwargs) {
    const Field fields[] = {
        {"slow", offsetof(LockedCall, hook.slow), CALLABLE, NULL},
        {"bindings", offsetof(LockedCall, bindings), EXACTLY, &PyDict_Type},
        {"open_state", offsetof(LockedCall, open_state), A_CLASS, NULL},
        {"after_error", offsetof(LockedCall, after_error), CALLABLE, NULL},
        {"record", offsetof(LockedCall, record), CALLABLE, NULL},
        {"generator", offsetof(LockedCall, generator), A_CLASS, NULL},
        {"binding_type", offsetof(LockedCall, binding.type), A_CLASS, NULL},
        {"series_type", offsetof(LockedCall, series.type), A_CLASS, NULL},
        {NULL, 0, ANY, NULL},
    };
    PyObject *op = hook_new(&LockedCallType, locked_call, "locked_call", fields, args, kwargs);
    if (op == NULL) {
        return NULL;
    }
    LockedCall *h = (LockedCall *)op;
    static const char *const binding_slots[] = {"exclusive", "hot", NULL};
    Py_ssize_t *const binding_offsets[] = {&h->binding.exclusive, &h->binding.hot};
    if (require_slots("locked_call", "binding_type", (PyObject *)h->binding.type, binding_slots, binding_offsets,
                      &h->binding.type) < 0 ||
        series_layout(&h->series, "locked_call", (PyObject *)h->series.type) < 0) {
        Py_DECREF(op);
        return NULL;
    }
    return hook_ready(op);
}

/* -- the module ------------------------------------------------------------------------------------ */
static PyMethodDef hooks_methods[] = {
    HOT_PATH_METHODS,
    FACTORY_METHOD(locked_call,
                   "locked_call(*, slow, bindings, open_state, after_error, record, generator, binding_type, "
                   "series_type): pybreaker's CircuitBreaker.call."),
    {NULL, NULL, 0, NULL},
};

static int hooks_exec(PyObject *module) {
    if (intern_name(&S__lock, "_lock") < 0 || intern_name(&S_state, "state") < 0 || intern_name(&S_call, "call") < 0 ||
        hot_path_exec(module, RELIES_ON) < 0 || PyModule_AddType(module, &LockedCallType) < 0) {
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
    .m_doc = "pybreaker's compiled hot path (CircuitBreaker.call).",
    .m_size = 0, /* no per-module state (multi-phase initialisation needs it non-negative) */
    .m_methods = hooks_methods,
    .m_slots = hooks_slots,
};

PyMODINIT_FUNC PyInit__hooks(void) { return PyModuleDef_Init(&hooks_module); }
