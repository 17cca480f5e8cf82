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
#define HOOK_NAMES(X) X(_state)
#include "hot_path.h"

/* -- guarded_call: circuitbreaker's ``call(self, func, *args, **kwargs)`` ------------------------
 * Fast path: a known breaker whose ``_state`` is ``closed``, whose series is hot and whose row in
 * this thread exists, called while OpenTelemetry's context is empty; the block ``with breaker:
 * func(*args, **kwargs)`` runs here, timed. A raising block goes to ``raised(breaker, entry, start,
 * exc, True)`` and on unchanged. */
typedef struct {
    Hook hook;
    PyObject *entries; /* id(breaker) -> entry */
    PyObject *closed;  /* the library's closed state value */
    PyObject *raised;  /* the twin's ``raised(breaker, entry, start, exc, closed)`` */
    PyObject *record;  /* the twin's ``record(entry, elapsed)``, for a row it could not update */
    EntryLayout entry;
    SeriesLayout series;
} GuardedCall;

HOOK_KIND(GuardedCall, guarded_call, NULL, "circuitbreaker's CircuitBreaker.call, compiled.",
          ARG_OF(GuardedCall, entries, &PyDict_Type), ARG(GuardedCall, closed, ANY),
          ARG(GuardedCall, raised, CALLABLE), ARG(GuardedCall, record, CALLABLE),
          CLASS_ARG(GuardedCall, entry, local, hot), SERIES_ARG(GuardedCall))

static PyObject *guarded_call(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    GuardedCall *h = HOOK_CALLED(GuardedCall);
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs < 2 || names_a_parameter(kwnames) || context_held()) {
        return SLOW(h);
    }
    PyObject *breaker = args[0], *func = args[1];
    PyObject *entry = Py_XNewRef(by_id(h->entries, breaker));
    PyObject *local = entry != NULL ? hot_local(&h->entry, &h->series, entry) : NULL;
    PyObject *row = local != NULL ? thread_row(&h->hook.rows, local) : NULL;
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
    if (fast && specials(&h->hook.specials, breaker, &enter, &exit) < 0) {
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

/* -- the module ------------------------------------------------------------------------------------ */
/* The library's attribute names its C reads (listed at the top), its ``RELIES_ON``. */
static const char *const RELIES_ON[] = {"_state", "__enter__", "__exit__", NULL};

HOOKS_MODULE_INIT("circuitbreaker's compiled hot path (CircuitBreaker.call).", TYPES(&GuardedCallType),
                  FACTORY_METHOD(guarded_call, "guarded_call(*, slow, entries, closed, raised, record, entry_type, "
                                               "series_type): circuitbreaker's CircuitBreaker.call."))
