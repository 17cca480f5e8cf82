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
#define HOOK_NAMES(X) X(_lock) X(state) X(call)
#include "hot_path.h"

/* -- locked_call: pybreaker's ``CircuitBreaker.call(self, func, *args, **kwargs)`` -------------------
 * The library's ``with self._lock: return self.state.call(func, *args, **kwargs)`` (the shape the
 * Python side checked), timed: a closed or half-open state's call is one histogram update of the
 * binding's exclusive row (only ever written under this lock); an open state's call is the
 * rejection the patched ``before_call`` counts; a raising call goes to ``after_error`` under the
 * lock, as in the twin. A breaker with no binding, and a call made while OpenTelemetry's context
 * holds something (decided at entry, for the whole call), go to the twin. */
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
} LockedCall;

HOOK_KIND(LockedCall, locked_call, NULL, "pybreaker's CircuitBreaker.call, compiled.",
          ARG_OF(LockedCall, bindings, &PyDict_Type), ARG(LockedCall, open_state, A_CLASS),
          ARG(LockedCall, after_error, CALLABLE), ARG(LockedCall, record, CALLABLE),
          ARG(LockedCall, generator, A_CLASS), CLASS_ARG(LockedCall, binding, exclusive, hot), SERIES_ARG(LockedCall))

static PyObject *locked_call(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    LockedCall *h = HOOK_CALLED(LockedCall);
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    Py_ssize_t nkw = kwnames != NULL ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs < 2 || nargs + nkw > 16 || names_a_parameter(kwnames) || context_held()) {
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
    if (specials(&h->hook.specials, lock, &enter, &exit) < 0) {
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

/* -- the module ------------------------------------------------------------------------------------ */
/* The library's attribute names its C reads (listed at the top), its ``RELIES_ON``. */
static const char *const RELIES_ON[] = {"_lock", "state", "call", "__enter__", "__exit__", NULL};

HOOKS_MODULE_INIT("pybreaker's compiled hot path (CircuitBreaker.call).", TYPES(&LockedCallType),
                  FACTORY_METHOD(locked_call, "locked_call(*, slow, bindings, open_state, after_error, record, "
                                              "generator, binding_type, series_type): pybreaker's "
                                              "CircuitBreaker.call."))
