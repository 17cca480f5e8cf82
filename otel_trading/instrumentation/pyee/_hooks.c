/* pyee's compiled hot paths: ``EventEmitter._call_handlers`` (``emitter_call``) and
 * ``AsyncIOEventEmitter._emit_run`` (``emit_run``), with ``StandIn``, a handler that already ran.
 * Their pure-Python twins are ``_call_handlers`` and ``_emit_run`` in ``pyee/hooks.py``
 * (``PyeeEmitters._call_handlers``/``_asyncio_emit_run``).
 *
 * What they rely on of pyee (module tuple ``RELIES_ON``; the shape of ``_call_handlers`` is checked
 * before patching):
 *   emitter._lock            the lock the handlers are copied under
 *   _lock.__enter__/__exit__ its ``with`` protocol
 *   emitter._events          event -> handlers (an OrderedDict)
 *   _events.get              the event's handlers, or None
 *   handlers.values          the handlers, in order
 *   emitter._emit_run        run one handler (the asyncio one is ``emit_run`` below)
 *
 * What they read of otel-trading's objects, at slot offsets checked by the factory:
 *   binding_type (EmitterBinding)  events (event -> _Event), mode (SYNC or SCHEDULED)
 *   event_type (_Event)            local (its rows' threading.local, whose ``row`` is the thread's row), hot
 *   series_type (Series)           fast
 * and, by name, the ``dispatch`` field of ``current`` (a threading.local whose class has it).
 */
#define HOOKS_MODULE "otel_trading.instrumentation.pyee._hooks"
#define HOOK_NAMES(X) X(dispatch) X(_lock) X(_events) X(get) X(values) X(_emit_run)
#include "hot_path.h"

/* -- emitter_call: pyee's ``EventEmitter._call_handlers(self, event, args, kwargs)`` ----------------
 * Fast path: a known emitter that is not uplifted, an app event with a hot series and a row in this
 * thread, emitted while OpenTelemetry's context is empty (else the twin takes the whole emit). The
 * event is published, pyee's own runs, and the event is processed when its handlers are done: at
 * once when they all ran inline, else when the dispatch one of them scheduled work in is finished. */
typedef struct {
    Hook hook;
    PyObject *orig;      /* pyee's own ``_call_handlers`` (the twin calls it; this hook runs its body) */
    PyObject *bindings;  /* id(emitter) -> binding */
    PyObject *sync;      /* the binding modes: handlers run inline */
    PyObject *scheduled; /* ... or may be scheduled (asyncio, executor) */
    PyObject *uplift;    /* [pyee.uplift's EMIT_WRAPPERS, or None] */
    PyObject *current;   /* the thread's dispatch holder */
    PyObject *end;       /* the twin's ``end(event, row, elapsed, error, dispatch)`` */
    struct {
        PyTypeObject *type; /* strong */
        Py_ssize_t events, mode;
    } binding;
    EntryLayout event;
    SeriesLayout series;
} EmitterCall;

/* What emitter_call() checks besides: a one-item ``uplift``, and a ``current`` with ``dispatch``. */
static int emitter_call_check(PyObject *op, const char *factory) {
    EmitterCall *h = (EmitterCall *)op;
    if (PyList_GET_SIZE(h->uplift) != 1) {
        PyErr_Format(PyExc_TypeError, "%s(): 'uplift' must be a list of one item", factory);
        return -1;
    }
    return require_attribute(factory, "current", Py_TYPE(h->current), S_dispatch);
}

HOOK_KIND(EmitterCall, emitter_call, emitter_call_check, "pyee's EventEmitter._call_handlers, compiled.",
          ARG(EmitterCall, orig, CALLABLE), ARG_OF(EmitterCall, bindings, &PyDict_Type),
          ARG(EmitterCall, sync, ANY), ARG(EmitterCall, scheduled, ANY), ARG_OF(EmitterCall, uplift, &PyList_Type),
          ARG(EmitterCall, current, ANY), ARG(EmitterCall, end, CALLABLE),
          CLASS_ARG(EmitterCall, binding, events, mode), CLASS_ARG(EmitterCall, event, local, hot),
          SERIES_ARG(EmitterCall))

/* The event is processed (``elapsed`` after its start), or it ends off the inline path: a handler
 * raised, a handler scheduled work in ``dispatch``, or the row was not one: ``end`` then. */
static void end_event(EmitterCall *h, PyObject *ev, PyObject *row, double elapsed, PyObject *error, PyObject *dispatch) {
    if (error == NULL && dispatch == NULL && observe_row(row, elapsed) == 0) {
        return;
    }
    PyObject *end_args[5] = {ev, row, NULL, error != NULL ? error : Py_None, dispatch != NULL ? dispatch : Py_None};
    bookkeep_at(h->end, end_args, 5, 2, elapsed);
}

/* pyee's ``EventEmitter._call_handlers(self, event, args, kwargs)`` (the shape the Python side
 * checked): the event's handlers copied under the emitter's lock, then each handed to
 * ``self._emit_run`` in order; True when there was at least one. */
static PyObject *pyee_call_handlers(EmitterCall *h, PyObject *self, PyObject *event, PyObject *args, PyObject *kwargs) {
    PyObject *lock = PyObject_GetAttr(self, S__lock);
    if (lock == NULL) {
        return NULL;
    }
    PyObject *enter, *exit;
    if (specials(&h->hook.specials, lock, &enter, &exit) < 0) {
        Py_DECREF(lock);
        return NULL;
    }
    PyObject *entered = call_special(enter, lock, NULL, 0);
    Py_DECREF(enter);
    if (entered == NULL) {
        Py_DECREF(exit);
        Py_DECREF(lock);
        return NULL;
    }
    Py_DECREF(entered);
    PyObject *funcs = NULL;
    PyObject *table = PyObject_GetAttr(self, S__events);
    if (table != NULL) {
        PyObject *handlers = PyObject_CallMethodOneArg(table, S_get, event);
        if (handlers != NULL && handlers != Py_None) {
            PyObject *values = PyObject_CallMethodNoArgs(handlers, S_values);
            funcs = values != NULL ? PySequence_List(values) : NULL;
            Py_XDECREF(values);
        } else if (handlers == Py_None) {
            funcs = PyList_New(0); /* the default when there is none is an empty OrderedDict */
        }
        Py_XDECREF(handlers);
        Py_DECREF(table);
    }
    int left;
    if (funcs == NULL) { /* leave the lock as ``with`` does, the error going on */
        PyObject *error = take_error();
        left = exit_with_error(exit, lock, error);
        if (left == 0) {
            give_error(error);
        } else {
            Py_DECREF(error);
            if (left > 0) { /* suppressed: the copy of the handlers was never made */
                PyErr_SetString(PyExc_UnboundLocalError,
                                "cannot access local variable 'funcs' where it is not associated with a value");
            }
        }
        Py_DECREF(exit);
        Py_DECREF(lock);
        return NULL;
    }
    left = exit_normally(exit, lock);
    Py_DECREF(exit);
    Py_DECREF(lock);
    if (left < 0) {
        Py_DECREF(funcs);
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(funcs);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *call_args[4] = {self, PyList_GET_ITEM(funcs, i), args, kwargs};
        PyObject *done = PyObject_VectorcallMethod(S__emit_run, call_args, 4 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        if (done == NULL) {
            Py_DECREF(funcs);
            return NULL;
        }
        Py_DECREF(done);
    }
    Py_DECREF(funcs);
    return PyBool_FromLong(n > 0);
}

static PyObject *emitter_call(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    EmitterCall *h = HOOK_CALLED(EmitterCall);
    if (PyVectorcall_NARGS(nargsf) != 4 || kwnames != NULL || context_held()) {
        return SLOW(h);
    }
    PyObject *self = args[0], *event = args[1];
    PyObject *binding = by_id(h->bindings, self); /* borrowed */
    if (binding == NULL || !Py_IS_TYPE(binding, h->binding.type)) {
        return SLOW(h);
    }
    PyObject *events = SLOT(binding, h->binding.events), *mode = SLOT(binding, h->binding.mode);
    int sync = mode == h->sync;
    if (events == NULL || !PyDict_CheckExact(events) || (!sync && mode != h->scheduled)) {
        return SLOW(h);
    }
    PyObject *wrappers = PyList_GET_ITEM(h->uplift, 0);
    if (wrappers != Py_None && PyObject_IsTrue(wrappers) != 0) { /* pyee.uplift in use */
        PyErr_Clear();
        return SLOW(h);
    }
    /* The event's hash and equality may be Python code: hold the table while it is searched. */
    Py_INCREF(events);
    PyObject *ev = Py_XNewRef(PyDict_GetItemWithError(events, event)); /* None for pyee's own events */
    Py_DECREF(events);
    PyObject *local = ev != NULL && ev != Py_None ? hot_local(&h->event, &h->series, ev) : NULL;
    PyObject *row = local != NULL ? thread_row(&h->hook.rows, local) : NULL;
    Py_XDECREF(local);
    if (row == NULL || !PyList_CheckExact(row) || PyList_GET_SIZE(row) <= 0) {
        Py_XDECREF(row);
        Py_XDECREF(ev);
        PyErr_Clear();
        return SLOW(h);
    }
    PyObject *current = h->current, *saved = NULL, *marker = NULL;
    double start = now();
    if (!sync) {
        /* The handlers may schedule work: an (event, start) marker until one does, when the
         * twin's _emit_run hook turns it into a dispatch that waits for the work to end. */
        saved = PyObject_GetAttr(current, S_dispatch);
        PyObject *start_obj = saved != NULL ? PyFloat_FromDouble(start) : NULL;
        marker = start_obj != NULL ? PyTuple_Pack(2, ev, start_obj) : NULL;
        Py_XDECREF(start_obj);
        if (marker == NULL || PyObject_SetAttr(current, S_dispatch, marker) < 0) {
            PyErr_Clear();
            Py_XDECREF(marker);
            Py_XDECREF(saved);
            Py_DECREF(row);
            Py_DECREF(ev);
            return SLOW(h);
        }
    }
    /* published (column C0): read and written with nothing in between that could run Python code */
    PyObject *published = PyList_GET_ITEM(row, 0);
    Py_ssize_t count = PyLong_CheckExact(published) ? PyLong_AsSsize_t(published) : -1;
    PyObject *bumped = count >= 0 ? PyLong_FromSsize_t(count + 1) : NULL;
    if (bumped != NULL) {
        PyList_SetItem(row, 0, bumped);
    } else {
        PyErr_Clear();
        PyObject *one = PyLong_FromLong(1); /* ``row[C0] += 1`` as the twin writes it */
        published = Py_NewRef(published);
        bumped = one != NULL ? PyNumber_Add(published, one) : NULL;
        Py_XDECREF(one);
        Py_DECREF(published);
        if (bumped == NULL || PyList_SetItem(row, 0, bumped) < 0) {
            PyErr_Clear();
        }
    }
    PyObject *result = pyee_call_handlers(h, self, event, args[2], args[3]);
    PyObject *error = result == NULL ? take_error() : NULL;
    if (sync) {
        if (error != NULL || PyObject_IsTrue(result) == 1) { /* handled: processed */
            end_event(h, ev, row, now() - start, error, NULL);
        }
        PyErr_Clear();
    } else {
        PyObject *dispatch = PyObject_GetAttr(current, S_dispatch);
        if (dispatch == NULL) {
            PyErr_Clear();
        }
        if (PyObject_SetAttr(current, S_dispatch, saved) < 0) {
            PyErr_Clear();
        }
        if (dispatch == marker) {
            if (result != Py_False) { /* every handler ran inline (pyee raising included) */
                end_event(h, ev, row, now() - start, NULL, NULL);
            }
        } else if (dispatch != NULL && dispatch != Py_None) {
            end_event(h, ev, row, 0.0, NULL, dispatch);
        }
        Py_XDECREF(dispatch);
        Py_DECREF(marker);
        Py_DECREF(saved);
        if (result != NULL) { /* as the twin: bool(outcome) */
            int truth = PyObject_IsTrue(result);
            Py_SETREF(result, truth < 0 ? NULL : PyBool_FromLong(truth));
        }
    }
    Py_DECREF(ev);
    Py_DECREF(row);
    if (error != NULL) {
        give_error(error);
    }
    return result;
}

/* -- StandIn: a handler that already ran ---------------------------------------------------------------
 * Handed to pyee's own asyncio ``_emit_run`` in place of a handler the hook ran itself: called with
 * the handler's arguments, it returns the handler's result (pyee then schedules a coroutine or
 * watches a future, exactly as it would have), or raises the handler's exception again (pyee then
 * emits its ``error`` event from its own ``except``, exactly as it would have). */
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *value;
    int raising;
} StandIn;

static PyObject *stand_in_call(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    StandIn *stand_in = (StandIn *)op;
    if (stand_in->raising) {
        give_error(Py_NewRef(stand_in->value));
        return NULL;
    }
    return Py_NewRef(stand_in->value);
}

static int stand_in_traverse(PyObject *op, visitproc visit, void *arg) {
    Py_VISIT(((StandIn *)op)->value);
    return 0;
}

static int stand_in_clear(PyObject *op) {
    Py_CLEAR(((StandIn *)op)->value);
    return 0;
}

static void stand_in_dealloc(PyObject *op) {
    PyObject_GC_UnTrack(op);
    stand_in_clear(op);
    PyObject_GC_Del(op);
}

static PyTypeObject StandInType = {
    TYPE_HEAD(StandIn, "A pyee handler that already ran: gives back its result or raises its exception again."),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_dealloc = stand_in_dealloc,
    .tp_traverse = stand_in_traverse,
    .tp_clear = stand_in_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(StandIn, vectorcall),
};

/* -- emit_run: pyee's ``AsyncIOEventEmitter._emit_run(self, f, args, kwargs)`` ----------------------
 * While no event is recorded in this thread, pyee's own runs. While one is, the handler runs here
 * first: None (a sync handler's usual result) ends the run, as in pyee's own; an ``Exception`` is
 * counted (``on_error(dispatch)``) and any other result goes through ``after(result, dispatch)``
 * (the twin: a coroutine comes back inside one that ends the event when it does, a future is
 * watched); then pyee's own runs with a StandIn for the handler, so its scheduling and its
 * ``error`` event are its own. It records no duration itself (the twin's helpers it calls do, in
 * the caller's context), so it does not look at OpenTelemetry's context: it serves the handlers of
 * an emit whose ``_call_handlers`` went to the twin as it does those of a compiled one. */
typedef struct {
    Hook hook;
    PyObject *orig;     /* pyee's own ``_emit_run`` */
    PyObject *current;  /* the thread's dispatch holder */
    PyObject *on_error; /* the twin's ``on_error(dispatch)`` */
    PyObject *after;    /* the twin's ``after(result, dispatch)`` */
} EmitRun;

/* What emit_run() checks besides: a ``current`` with ``dispatch``. */
static int emit_run_check(PyObject *op, const char *factory) {
    return require_attribute(factory, "current", Py_TYPE(((EmitRun *)op)->current), S_dispatch);
}

HOOK_KIND(EmitRun, emit_run, emit_run_check, "pyee's AsyncIOEventEmitter._emit_run, compiled.",
          ARG(EmitRun, orig, CALLABLE), ARG(EmitRun, current, ANY), ARG(EmitRun, on_error, CALLABLE),
          ARG(EmitRun, after, CALLABLE))

/* pyee's own ``_emit_run(self, stand_in, args, kwargs)`` with a StandIn for ``value`` (stolen). */
static PyObject *run_stand_in(EmitRun *h, PyObject *const *args, PyObject *value, int raising) {
    StandIn *stand_in = PyObject_GC_New(StandIn, &StandInType);
    if (stand_in == NULL) {
        Py_DECREF(value);
        return NULL;
    }
    stand_in->vectorcall = stand_in_call;
    stand_in->value = value;
    stand_in->raising = raising;
    PyObject_GC_Track((PyObject *)stand_in);
    PyObject *run_args[4] = {args[0], (PyObject *)stand_in, args[2], args[3]};
    PyObject *result = PyObject_Vectorcall(h->orig, run_args, 4, NULL);
    Py_DECREF(stand_in);
    return result;
}

static PyObject *emit_run(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    EmitRun *h = HOOK_CALLED(EmitRun);
    if (PyVectorcall_NARGS(nargsf) != 4 || kwnames != NULL || !PyTuple_CheckExact(args[2]) ||
        !PyDict_CheckExact(args[3])) {
        return SLOW(h);
    }
    PyObject *dispatch = PyObject_GetAttr(h->current, S_dispatch);
    if (dispatch == NULL) {
        PyErr_Clear();
        return SLOW(h);
    }
    if (dispatch == Py_None) {
        Py_DECREF(dispatch);
        return PyObject_Vectorcall(h->orig, args, 4, NULL);
    }
    PyObject *result = PyObject_Call(args[1], args[2], PyDict_GET_SIZE(args[3]) ? args[3] : NULL);
    if (result == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_Exception)) {
            Py_DECREF(dispatch);
            return NULL; /* pyee's own lets it through too */
        }
        PyObject *error = take_error();
        bookkeep(h->on_error, &dispatch, 1);
        Py_DECREF(dispatch);
        return run_stand_in(h, args, error, 1);
    }
    if (result == Py_None) {
        Py_DECREF(dispatch);
        return result;
    }
    PyObject *after_args[2] = {result, dispatch};
    PyObject *given = PyObject_Vectorcall(h->after, after_args, 2, NULL);
    Py_DECREF(dispatch);
    if (given == NULL) { /* the twin reports its own errors; never lose the handler's result */
        PyErr_Clear();
        given = Py_NewRef(result);
    }
    Py_DECREF(result);
    return run_stand_in(h, args, given, 0);
}

/* -- the module ------------------------------------------------------------------------------------ */
/* The library's attribute names its C reads (listed at the top), its ``RELIES_ON``. */
static const char *const RELIES_ON[] = {"_lock", "__enter__", "__exit__", "_events", "get", "values", "_emit_run", NULL};

HOOKS_MODULE_INIT("pyee's compiled hot paths (EventEmitter._call_handlers, AsyncIOEventEmitter._emit_run).",
                  TYPES(&StandInType, &EmitterCallType, &EmitRunType),
                  FACTORY_METHOD(emitter_call, "emitter_call(*, slow, orig, bindings, sync, scheduled, uplift, "
                                               "current, end, binding_type, event_type, series_type): pyee's "
                                               "EventEmitter._call_handlers."),
                  FACTORY_METHOD(emit_run, "emit_run(*, slow, orig, current, on_error, after): pyee's "
                                           "AsyncIOEventEmitter._emit_run."))
