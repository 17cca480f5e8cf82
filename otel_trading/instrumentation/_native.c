/* Compiled hot paths of the library instrumentations; every one has a pure-Python twin that is
 * used when this module is not built or is turned off (see _native_loader.py).
 *
 * Why C: the libraries' own closed-path calls cost 400-700 ns, and a Python wrapper's frame, two
 * perf_counter() calls and a histogram update in Python already cost more than the 30% budget.
 * Here a fast path stands in for the wrapper's Python frame, reads CLOCK_MONOTONIC (the clock
 * time.perf_counter reads on POSIX, so starts and ends mix freely with the Python twins') and
 * updates the thread's row while holding the GIL, so a collection never sees half an update.
 * Whatever is off a fast path goes to the Python twin, which decides as it always did.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <string.h>
#include <time.h>

/* Python.h has the Py_-prefixed member flags since 3.12, which deprecates structmember.h's. */
#if PY_VERSION_HEX < 0x030C0000
#include <structmember.h>
#define Py_T_OBJECT_EX T_OBJECT_EX
#define Py_READONLY READONLY
#endif

/* -- row layout, set once by configure() from otel_trading.recording.rows ----------------------- */
static Py_ssize_t I_SUM = -1, I_MIN, I_MAX, I_B0, N_BOUNDS;
static double *BOUNDS_C = NULL;

static PyObject *S_row, *S_local, *S_counted, *S_hot, *S_fast, *S__state, *S_enter, *S_exit, *S_context,
    *S_name, *S_events, *S_mode, *S_dispatch, *S_wrapped, *S_class, *S__lock, *S__events, *S_values, *S__emit_run,
    *S_get_name, *S_exclusive, *S_state, *S_call, *S_self, *S_func;

static inline double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Add ``value`` to a row's histogram columns (count implied by the buckets). 0 on success; -1
 * with no exception set when ``row`` is not a row of the configured layout or memory ran out. */
static int observe_row(PyObject *row, double value) {
    if (I_SUM < 0 || !PyList_CheckExact(row) || PyList_GET_SIZE(row) < I_B0 + N_BOUNDS + 1) {
        return -1;
    }
    PyObject *sum = PyList_GET_ITEM(row, I_SUM);
    PyObject *low = PyList_GET_ITEM(row, I_MIN);
    PyObject *high = PyList_GET_ITEM(row, I_MAX);
    if (!PyFloat_CheckExact(sum) || !PyFloat_Check(low) || !PyFloat_Check(high)) {
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
    PyObject *new_sum = PyFloat_FromDouble(PyFloat_AS_DOUBLE(sum) + value);
    PyObject *new_bucket = PyLong_FromSsize_t(count + 1);
    PyObject *new_low = value < PyFloat_AS_DOUBLE(low) ? PyFloat_FromDouble(value) : NULL;
    PyObject *new_high = value > PyFloat_AS_DOUBLE(high) ? PyFloat_FromDouble(value) : NULL;
    int fresh_low = value < PyFloat_AS_DOUBLE(low), fresh_high = value > PyFloat_AS_DOUBLE(high);
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

/* The last row a hook found: for the same ``local`` in the same thread it is the same row (a thread's
 * row is made once; thread-state ids are never reused, so a row of a thread that ended never
 * matches again). */
typedef struct {
    PyObject *local; /* strong */
    uint64_t thread;
    PyObject *row; /* strong */
} RowCache;

/* The calling thread's row of an entry (``local``: its ``local`` slot; ``counted``: its rows).
 * New reference, or NULL with no exception set. */
static PyObject *thread_row(RowCache *cache, PyObject *entry, PyObject *local) {
    uint64_t thread = PyThreadState_GetID(PyThreadState_Get());
    if (cache->row != NULL && cache->local == local && cache->thread == thread) {
        return Py_NewRef(cache->row);
    }
    PyObject *row = PyObject_GetAttr(local, S_row);
    if (row == NULL) {
        PyErr_Clear();
        PyObject *counted = PyObject_GetAttr(entry, S_counted);
        if (counted == NULL) {
            PyErr_Clear();
            return NULL;
        }
        row = PyObject_CallMethodNoArgs(counted, S_row);
        Py_DECREF(counted);
        if (row == NULL) {
            PyErr_Clear();
            return NULL;
        }
    }
    Py_XSETREF(cache->local, Py_NewRef(local));
    Py_XSETREF(cache->row, Py_NewRef(row));
    cache->thread = thread;
    return row;
}

/* -- caches --------------------------------------------------------------------------------------
 * A special method looked up on a type, kept while the type's version tag is unchanged (CPython
 * gives a type a new tag whenever it or a base is modified), as the interpreter's own caches do. */
typedef struct {
    PyTypeObject *type; /* borrowed: compared by identity only, and re-checked by the tag */
    unsigned int tag;
    PyObject *enter;
    PyObject *exit;
} SpecialCache;

/* The offset of a writable object ``__slots__`` member of ``type``, or -1 when ``name`` is not one. */
static Py_ssize_t member_offset(PyTypeObject *type, PyObject *name) {
    PyObject *descr = PyObject_GetAttr((PyObject *)type, name);
    if (descr == NULL) {
        PyErr_Clear();
        return -1;
    }
    Py_ssize_t offset = -1;
    if (Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
        PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
        if (member->type == Py_T_OBJECT_EX && !(member->flags & Py_READONLY)) {
            offset = member->offset;
        }
    }
    Py_DECREF(descr);
    return offset;
}

/* Two ``__slots__`` members of the Python twins' small classes (an entry's ``local`` and ``hot``, a
 * binding's ``events`` and ``mode``), read at their offsets; refreshed when another class shows up. */
typedef struct {
    PyObject *type; /* strong */
    Py_ssize_t a, b;
} Slots;

static int slots_of(Slots *slots, PyObject *obj, PyObject *name_a, PyObject *name_b) {
    if ((PyObject *)Py_TYPE(obj) != slots->type) {
        Py_XSETREF(slots->type, Py_NewRef((PyObject *)Py_TYPE(obj)));
        slots->a = member_offset(Py_TYPE(obj), name_a);
        slots->b = member_offset(Py_TYPE(obj), name_b);
    }
    return slots->a >= 0 && slots->b >= 0 ? 0 : -1;
}

#define SLOT(obj, offset) (*(PyObject **)((char *)(obj) + (offset)))

/* ``name`` found through ``type``'s MRO, descriptors not invoked: 1 with a new reference in
 * ``*found``, 0 when missing, -1 with an exception set. A public PyType_Lookup with that contract
 * was proposed for 3.15 (gh-139847) but its pull request was closed unmerged, so a bare version
 * check would not compile: a build opts in with -DNATIVE_HAVE_PYTYPE_LOOKUP once a release has it.
 * Until then the private _PyType_Lookup (3.10 to 3.14, and 3.15's development headers) stands in. */
#if PY_VERSION_HEX >= 0x030F0000 && defined(NATIVE_HAVE_PYTYPE_LOOKUP)
static int type_lookup(PyTypeObject *type, PyObject *name, PyObject **found) {
    return PyType_Lookup(type, name, found);
}
#else
static int type_lookup(PyTypeObject *type, PyObject *name, PyObject **found) {
    /* Borrowed, so owned before any Python code can run. It sets no exception (it clears its own):
     * NULL with one set means the caller's was pending, which goes on rather than a TypeError. */
    *found = Py_XNewRef(_PyType_Lookup(type, name));
    return *found != NULL ? 1 : PyErr_Occurred() ? -1 : 0;
}
#endif

/* ``type(obj).<name>`` found as the interpreter finds a special method: on the type only, through
 * its MRO (never on the metaclass). A new reference; TypeError as ``with`` raises when missing. */
static PyObject *special(PyObject *obj, PyObject *name) {
    PyObject *found;
    int status = type_lookup(Py_TYPE(obj), name, &found);
    if (status == 0) {
        PyErr_Format(PyExc_TypeError, "'%.200s' object does not support the context manager protocol",
                     Py_TYPE(obj)->tp_name);
    }
    return status > 0 ? found : NULL;
}

/* Call a special method found by ``special`` on ``obj`` with ``n`` (at most 3) more arguments,
 * binding it as the interpreter does: a function or method descriptor gets ``obj`` first, another
 * descriptor is bound through its ``__get__``, anything else is called as it is. */
static PyObject *call_special(PyObject *method, PyObject *obj, PyObject *const *rest, Py_ssize_t n) {
    PyObject *argv[4];
    if (PyType_HasFeature(Py_TYPE(method), Py_TPFLAGS_METHOD_DESCRIPTOR)) {
        argv[0] = obj;
        for (Py_ssize_t i = 0; i < n; i++) {
            argv[i + 1] = rest[i];
        }
        return PyObject_Vectorcall(method, argv, (size_t)n + 1, NULL);
    }
    descrgetfunc get = Py_TYPE(method)->tp_descr_get;
    if (get == NULL) {
        return PyObject_Vectorcall(method, rest, (size_t)n, NULL);
    }
    PyObject *bound = get(method, obj, (PyObject *)Py_TYPE(obj));
    if (bound == NULL) {
        return NULL;
    }
    PyObject *result = PyObject_Vectorcall(bound, rest, (size_t)n, NULL);
    Py_DECREF(bound);
    return result;
}

static int specials(SpecialCache *cache, PyObject *obj, PyObject **enter, PyObject **exit) {
    /* New references to type(obj).__enter__ and __exit__ (for call_special). */
    PyTypeObject *type = Py_TYPE(obj);
    int valid = cache->type == type && cache->tag != 0 && type->tp_version_tag == cache->tag;
#ifdef Py_TPFLAGS_VALID_VERSION_TAG
    valid = valid && PyType_HasFeature(type, Py_TPFLAGS_VALID_VERSION_TAG);
#endif
    if (!valid) {
        PyObject *new_enter = special(obj, S_enter);
        if (new_enter == NULL) {
            return -1;
        }
        PyObject *new_exit = special(obj, S_exit);
        if (new_exit == NULL) {
            Py_DECREF(new_enter);
            return -1;
        }
        Py_XSETREF(cache->enter, new_enter);
        Py_XSETREF(cache->exit, new_exit);
        cache->type = type;
        cache->tag = type->tp_version_tag; /* set by the lookups above, unless the type cannot have one */
    }
    /* Own references: a nested call on another class may replace the cache's. */
    *enter = Py_NewRef(cache->enter);
    *exit = Py_NewRef(cache->exit);
    return 0;
}

/* -- the exception being handled -------------------------------------------------------------------
 * While a ``with`` statement's __exit__ runs for a raising block, the block's exception is the one
 * being handled: sys.exc_info() returns it, a bare ``raise`` re-raises it, and an exception raised
 * meanwhile gets it as __context__ (the interpreter chains it, breaking cycles). C code has no frame
 * of its own to hold it, so it is set in the current exception-state item and put back after, as
 * the interpreter's own handlers do.
 *
 * The public getters (PyErr_GetHandledException; PyErr_GetExcInfo before 3.11) look through an
 * empty item (a generator's, resumed inside an outer ``except``) to the outer exception, while the
 * setters write the current item: putting the outer exception back there would leave it in the
 * generator, to show again when it is resumed elsewhere. Clearing the item tells whose it was: it
 * held the exception only if that drops a reference to it (nothing else runs meanwhile, and the
 * getter's reference keeps it alive). */
typedef struct {
    PyObject *value; /* the current item's own, owned; NULL for none */
#if PY_VERSION_HEX < 0x030B0000
    PyObject *type, *traceback;
#endif
} Handled;

#if PY_VERSION_HEX >= 0x030B0000
static void handling_begin(Handled *saved, PyObject *error) {
    PyObject *handled = PyErr_GetHandledException(); /* new reference, or NULL */
    Py_ssize_t count = handled != NULL ? Py_REFCNT(handled) : 0;
    PyErr_SetHandledException(NULL);
    if (handled != NULL && Py_REFCNT(handled) == count) {
        Py_CLEAR(handled); /* an outer item's */
    }
    saved->value = handled;
    PyErr_SetHandledException(error); /* not stolen */
}

static void handling_end(Handled *saved) {
    PyErr_SetHandledException(saved->value);
    Py_XDECREF(saved->value);
}
#else
static void handling_begin(Handled *saved, PyObject *error) {
    PyObject *type, *value, *traceback;
    PyErr_GetExcInfo(&type, &value, &traceback); /* new references, any of them NULL */
    Py_ssize_t count = value != NULL ? Py_REFCNT(value) : 0;
    PyErr_SetExcInfo(NULL, NULL, NULL);
    if (value != NULL && Py_REFCNT(value) == count) { /* an outer item's */
        Py_CLEAR(type);
        Py_CLEAR(value);
        Py_CLEAR(traceback);
    }
    saved->type = type;
    saved->value = value;
    saved->traceback = traceback;
    /* PyErr_SetExcInfo steals all three */
    PyErr_SetExcInfo(Py_NewRef((PyObject *)Py_TYPE(error)), Py_NewRef(error), PyException_GetTraceback(error));
}

static void handling_end(Handled *saved) {
    PyErr_SetExcInfo(saved->type, saved->value, saved->traceback); /* stolen */
}
#endif

/* ``exit(obj, type(error), error, traceback)`` for a block that raised ``error``, as ``with`` calls
 * it: 1 when it returned true (the exception is suppressed), 0 when not (the caller re-raises
 * ``error``), -1 when it raised (that exception is set, chained to ``error`` by the interpreter). */
static int exit_with_error(PyObject *exit, PyObject *obj, PyObject *error) {
    PyObject *tb = PyException_GetTraceback(error);
    PyObject *rest[3] = {(PyObject *)Py_TYPE(error), error, tb != NULL ? tb : Py_None};
    Handled saved;
    handling_begin(&saved, error);
    PyObject *result = call_special(exit, obj, rest, 3);
    int suppressed = result == NULL ? -1 : PyObject_IsTrue(result);
    Py_XDECREF(result);
    handling_end(&saved);
    Py_XDECREF(tb);
    return suppressed;
}

/* ``exit(obj, None, None, None)`` for a block that ended normally: 0, or -1 with its exception set. */
static int exit_normally(PyObject *exit, PyObject *obj) {
    PyObject *rest[3] = {Py_None, Py_None, Py_None};
    PyObject *result = call_special(exit, obj, rest, 3);
    if (result == NULL) {
        return -1;
    }
    Py_DECREF(result);
    return 0;
}

/* -- the exception being raised ----------------------------------------------------------------------
 * 3.12 keeps it as one normalized object with its traceback attached (PyErr_GetRaisedException);
 * before, it is PyErr_Fetch's three parts, which 3.12 deprecates. */

/* The exception being raised, normalized, with its traceback attached; the error indicator is clear. */
static PyObject *take_error(void) {
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL) {
        PyException_SetTraceback(value, tb);
    }
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
#endif
}

/* Raise ``value`` (a reference taken from take_error) again. */
static void give_error(PyObject *value) {
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(value);
#else
    PyObject *tb = PyException_GetTraceback(value);
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(value)), value, tb);
#endif
}

/* An exception being raised (or none), set aside as it is while other code runs. */
typedef struct {
#if PY_VERSION_HEX >= 0x030C0000
    PyObject *exc;
#else
    PyObject *type, *value, *tb;
#endif
} Pending;

static Pending pending_take(void) {
    Pending pending;
#if PY_VERSION_HEX >= 0x030C0000
    pending.exc = PyErr_GetRaisedException();
#else
    PyErr_Fetch(&pending.type, &pending.value, &pending.tb);
#endif
    return pending;
}

static void pending_restore(Pending pending) {
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(pending.exc);
#else
    PyErr_Restore(pending.type, pending.value, pending.tb);
#endif
}

static void pending_drop(Pending pending) {
#if PY_VERSION_HEX >= 0x030C0000
    Py_XDECREF(pending.exc);
#else
    Py_XDECREF(pending.type);
    Py_XDECREF(pending.value);
    Py_XDECREF(pending.tb);
#endif
}

/* Call a Python twin's bookkeeping helper; its result and errors are dropped (the helpers report
 * their own errors), and an exception being raised, if any, is kept. */
static void bookkeep(PyObject *helper, PyObject *const *args, Py_ssize_t n) {
    Pending pending = pending_take();
    PyObject *result = PyObject_Vectorcall(helper, args, n, NULL);
    if (result == NULL) {
        PyErr_Clear();
    } else {
        Py_DECREF(result);
    }
    pending_restore(pending);
}

/* ``bookkeep`` with ``args[at]`` a float of ``value`` (the call is dropped when there is no memory). */
static void bookkeep_at(PyObject *helper, PyObject **args, Py_ssize_t n, Py_ssize_t at, double value) {
    PyObject *number = PyFloat_FromDouble(value);
    if (number == NULL) {
        PyErr_Clear();
        return;
    }
    args[at] = number;
    bookkeep(helper, (PyObject *const *)args, n);
    Py_DECREF(number);
}

/* Record a success of ``elapsed`` seconds in the thread's row of ``entry``; when that row is not
 * of the configured layout, ``record(entry, elapsed)`` (the Python twin) does it. */
static void record_success(RowCache *cache, PyObject *entry, PyObject *local, PyObject *record, double elapsed) {
    PyObject *row = thread_row(cache, entry, local);
    if (row == NULL || observe_row(row, elapsed) != 0) {
        PyObject *args[2] = {entry, NULL};
        bookkeep_at(record, args, 2, 1, elapsed);
    }
    Py_XDECREF(row);
}

/* True when ``hot.fast`` is True (the series is bound to the rows). */
static int is_fast(PyObject *hot) {
    PyObject *flag = PyObject_GetAttr(hot, S_fast);
    if (flag == NULL) {
        PyErr_Clear();
        return 0;
    }
    int fast = flag == Py_True;
    Py_DECREF(flag);
    return fast;
}

/* The ``local`` slot (a new reference) of one of the twins' entries (``entry``: owned by the caller)
 * whose ``hot.fast`` is true; NULL, with no exception set, when it is not such an entry or its
 * series is not bound to its rows. */
static PyObject *hot_local(Slots *slots, PyObject *entry) {
    if (slots_of(slots, entry, S_local, S_hot) < 0) {
        PyErr_Clear();
        return NULL;
    }
    PyObject *local = SLOT(entry, slots->a), *hot = SLOT(entry, slots->b);
    if (local == NULL || hot == NULL) {
        return NULL;
    }
    /* Owned while ``fast`` is read: that may run Python code that lets another thread drop them. */
    Py_INCREF(local);
    Py_INCREF(hot);
    int fast = is_fast(hot);
    Py_DECREF(hot);
    if (!fast) {
        Py_DECREF(local);
        return NULL;
    }
    return local;
}

static PyObject *id_key(PyObject *obj) { return PyLong_FromVoidPtr(obj); }

/* ``table.get(id(obj))`` for the twins' id-keyed tables: a borrowed reference, or NULL with no
 * exception set (not found, or no memory for the key: either way the slow path takes the call). */
static PyObject *by_id(PyObject *table, PyObject *obj) {
    PyObject *key = id_key(obj);
    if (key == NULL) {
        PyErr_Clear();
        return NULL;
    }
    PyObject *found = PyDict_GetItemWithError(table, key);
    Py_DECREF(key);
    if (found == NULL) {
        PyErr_Clear();
    }
    return found;
}

/* -- configure(bounds, sum, min, max, b0) ------------------------------------------------------ */
static PyObject *configure(PyObject *module, PyObject *args) {
    PyObject *bounds;
    Py_ssize_t i_sum, i_min, i_max, i_b0;
    if (!PyArg_ParseTuple(args, "O!nnnn:configure", &PyTuple_Type, &bounds, &i_sum, &i_min, &i_max, &i_b0)) {
        return NULL;
    }
    /* observe_row checks a row's length against I_B0 + the bounds: every column must come before. */
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
    Py_RETURN_NONE;
}

/* -- observe(row, value) -> bool: the histogram update, for Python callers ---------------------- */
static PyObject *observe(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "observe(row, value) takes 2 arguments");
        return NULL;
    }
    double value = PyFloat_AsDouble(args[1]);
    if (value == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    return PyBool_FromLong(observe_row(args[0], value) == 0);
}

/* The value a hook last found for a key object, and the size of the dict it was found in then:
 * circuits are only ever added, never replaced, so while the size is unchanged (no circuit added,
 * none removed by uninstrument) the same key object (held, so no other object takes its address)
 * leads to the same value. */
typedef struct {
    PyObject *key;   /* strong */
    PyObject *value; /* strong */
    Py_ssize_t size;
} LastFound;

/* -- Hook: a replacement method ------------------------------------------------------------------
 * One type for every replacement installed on a library class: it binds like a function, takes
 * functools.update_wrapper's attributes, and runs the behaviour its factory chose. */
#define N_REFS 8

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *dict;
    PyObject *weakrefs;
    PyObject *refs[N_REFS];
    Slots slots;
    Slots slots2;
    SpecialCache specials;
    RowCache rows;
    LastFound circuit;
} Hook;

static PyTypeObject HookType;

static PyObject *hook_make(vectorcallfunc behaviour, PyObject *const *refs, Py_ssize_t n) {
    Hook *hook = PyObject_GC_New(Hook, &HookType);
    if (hook == NULL) {
        return NULL;
    }
    hook->vectorcall = behaviour;
    hook->dict = NULL;
    hook->weakrefs = NULL;
    for (Py_ssize_t i = 0; i < N_REFS; i++) {
        hook->refs[i] = i < n ? Py_NewRef(refs[i]) : NULL;
    }
    hook->slots.type = hook->slots2.type = NULL;
    hook->specials.type = NULL;
    hook->specials.tag = 0;
    hook->specials.enter = hook->specials.exit = NULL;
    hook->rows.local = hook->rows.row = NULL;
    hook->rows.thread = 0;
    hook->circuit.key = hook->circuit.value = NULL;
    hook->circuit.size = -1;
    PyObject_GC_Track((PyObject *)hook);
    return (PyObject *)hook;
}

static int hook_traverse(PyObject *op, visitproc visit, void *arg) {
    Hook *hook = (Hook *)op;
    Py_VISIT(hook->dict);
    for (int i = 0; i < N_REFS; i++) {
        Py_VISIT(hook->refs[i]);
    }
    Py_VISIT(hook->slots.type);
    Py_VISIT(hook->slots2.type);
    Py_VISIT(hook->specials.enter);
    Py_VISIT(hook->specials.exit);
    Py_VISIT(hook->rows.local);
    Py_VISIT(hook->rows.row);
    Py_VISIT(hook->circuit.key);
    Py_VISIT(hook->circuit.value);
    return 0;
}

static int hook_clear(PyObject *op) {
    Hook *hook = (Hook *)op;
    Py_CLEAR(hook->dict);
    for (int i = 0; i < N_REFS; i++) {
        Py_CLEAR(hook->refs[i]);
    }
    Py_CLEAR(hook->slots.type);
    Py_CLEAR(hook->slots2.type);
    Py_CLEAR(hook->specials.enter);
    Py_CLEAR(hook->specials.exit);
    Py_CLEAR(hook->rows.local);
    Py_CLEAR(hook->rows.row);
    Py_CLEAR(hook->circuit.key);
    Py_CLEAR(hook->circuit.value);
    hook->specials.type = NULL;
    return 0;
}

static void hook_dealloc(PyObject *op) {
    PyObject_GC_UnTrack(op);
    if (((Hook *)op)->weakrefs != NULL) {
        PyObject_ClearWeakRefs(op);
    }
    hook_clear(op);
    PyObject_GC_Del(op);
}

/* A function stored on a class binds to the instance; so does a hook. */
static PyObject *hook_get(PyObject *op, PyObject *obj, PyObject *type) {
    if (obj == NULL || obj == Py_None) {
        return Py_NewRef(op);
    }
    return PyMethod_New(op, obj);
}

/* The function a hook stands in for (``__wrapped__``, set by functools.update_wrapper), or NULL. */
/* The function a hook stands in for (``__wrapped__``, set by functools.update_wrapper): a new
 * reference, or NULL, with an exception set only if looking it up failed. */
static PyObject *hook_wrapped(PyObject *op) {
    Hook *hook = (Hook *)op;
    PyObject *wrapped = hook->dict != NULL ? PyDict_GetItemWithError(hook->dict, S_wrapped) : NULL;
    return Py_XNewRef(wrapped);
}

/* Introspection sees the replaced function, as with wrapt's proxies that contrib instrumentations
 * install: ``__class__`` is the wrapped function's (so inspect.isfunction() holds), and attributes
 * a hook does not have (``__code__``, ``__defaults__``, ...) are read from it. */
static PyObject *hook_class(PyObject *op, void *closure) {
    PyObject *wrapped = hook_wrapped(op);
    if (wrapped == NULL) {
        if (PyErr_Occurred()) {
            return NULL;
        }
        return Py_NewRef((PyObject *)Py_TYPE(op));
    }
    PyObject *cls = NULL;
    if (Py_EnterRecursiveCall(" reading a hook's __class__") == 0) { /* ``h.__wrapped__ = h`` */
        cls = PyObject_GetAttr(wrapped, S_class);
        Py_LeaveRecursiveCall();
    }
    Py_DECREF(wrapped);
    return cls;
}

static PyObject *hook_getattro(PyObject *op, PyObject *name) {
    PyObject *value = PyObject_GenericGetAttr(op, name);
    if (value != NULL || !PyErr_ExceptionMatches(PyExc_AttributeError)) {
        return value;
    }
    Pending error = pending_take(); /* kept while __wrapped__ is looked up */
    PyObject *wrapped = hook_wrapped(op);
    if (wrapped == NULL) {
        if (PyErr_Occurred()) {
            pending_drop(error);
        } else {
            pending_restore(error); /* the AttributeError stands */
        }
        return NULL;
    }
    pending_drop(error);
    if (Py_EnterRecursiveCall(" reading an attribute through a hook's __wrapped__") == 0) {
        value = PyObject_GetAttr(wrapped, name);
        Py_LeaveRecursiveCall();
    }
    Py_DECREF(wrapped);
    return value;
}

static PyGetSetDef hook_getset[] = {
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {"__class__", hook_class, NULL, NULL, NULL},
    {NULL},
};

static PyTypeObject HookType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "otel_trading.instrumentation._native.Hook",
    .tp_doc = "A compiled replacement method installed by otel-trading's instrumentation.",
    .tp_basicsize = sizeof(Hook),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_METHOD_DESCRIPTOR,
    .tp_dealloc = hook_dealloc,
    .tp_traverse = hook_traverse,
    .tp_clear = hook_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Hook, vectorcall),
    .tp_descr_get = hook_get,
    .tp_dictoffset = offsetof(Hook, dict),
    .tp_weaklistoffset = offsetof(Hook, weakrefs),
    .tp_getset = hook_getset,
    .tp_getattro = hook_getattro,
};

#define SLOW(hook) PyObject_Vectorcall((hook)->refs[0], args, nargsf, kwnames)

/* Keyword arguments a ``call(self, func, *args, **kwargs)`` binds itself: the library raises
 * TypeError for them, so such calls go to the twin, which has the library's signature. */
static int names_a_parameter(PyObject *kwnames) {
    if (kwnames == NULL) {
        return 0;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(kwnames); i++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, i);
        if (PyUnicode_Compare(name, S_self) == 0 || PyUnicode_Compare(name, S_func) == 0) {
            return 1;
        }
    }
    return 0;
}

/* -- guarded_call: circuitbreaker's ``call(self, func, *args, **kwargs)`` ------------------------
 * refs: slow (the Python twin), entries (id(breaker) -> entry), closed, raised, record.
 * Fast path: a known breaker whose ``_state`` is ``closed`` and whose series is hot; the block
 * ``with breaker: func(*args, **kwargs)`` runs here, timed. A raising block goes to
 * ``raised(breaker, entry, start, exc, True)`` and on unchanged. */
static PyObject *guarded_call(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    Hook *hook = (Hook *)op;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs < 2 || names_a_parameter(kwnames)) {
        return SLOW(hook);
    }
    PyObject *breaker = args[0], *func = args[1];
    PyObject *entry = Py_XNewRef(by_id(hook->refs[1], breaker));
    PyObject *local = entry != NULL ? hot_local(&hook->slots, entry) : NULL;
    if (local == NULL) {
        Py_XDECREF(entry);
        return SLOW(hook);
    }
    PyObject *state = PyObject_GetAttr(breaker, S__state);
    if (state == NULL) {
        PyErr_Clear();
    }
    int fast = state == hook->refs[2];
    Py_XDECREF(state);
    PyObject *enter = NULL, *exit = NULL;
    if (fast && specials(&hook->specials, breaker, &enter, &exit) < 0) {
        PyErr_Clear(); /* the twin raises what ``with`` raises */
        fast = 0;
    }
    if (!fast) {
        Py_DECREF(local);
        Py_DECREF(entry);
        return SLOW(hook);
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
            bookkeep_at(hook->refs[3], raised_args, 5, 2, start);
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
    record_success(&hook->rows, entry, local, hook->refs[4], now() - start);
    goto done;
raised: {
    PyObject *raised_args[5] = {breaker, entry, NULL, error, Py_True};
    bookkeep_at(hook->refs[3], raised_args, 5, 2, start);
    give_error(error);
}
done:
    Py_DECREF(enter);
    Py_DECREF(exit);
    Py_DECREF(local);
    Py_DECREF(entry);
    return result;
}

/* -- locked_call: pybreaker's ``CircuitBreaker.call(self, func, *args, **kwargs)`` -------------------
 * refs: slow, bindings (breaker._lock -> binding), open_state (the open state class), after_error
 * (the twin's ``after_error(breaker, start)``), record (the twin's ``record(binding, elapsed)`` for a
 * series not bound to the rows), generator (types.GeneratorType).
 * The library's ``with self._lock: return self.state.call(func, *args, **kwargs)`` (the shape the
 * Python side checked), timed: a closed or half-open state's call is one histogram update of the
 * binding's exclusive row (only ever written under this lock); an open state's call is the
 * rejection the patched ``before_call`` counts; a raising call goes to ``after_error`` under the
 * lock, as in the twin. */
static PyObject *locked_call(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    Hook *hook = (Hook *)op;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    Py_ssize_t nkw = kwnames != NULL ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs < 2 || nargs + nkw > 16 || names_a_parameter(kwnames)) {
        return SLOW(hook);
    }
    PyObject *breaker = args[0];
    PyObject *lock = PyObject_GetAttr(breaker, S__lock);
    if (lock == NULL) {
        PyErr_Clear();
        return SLOW(hook);
    }
    PyObject *binding = PyDict_GetItemWithError(hook->refs[1], lock); /* borrowed */
    if (binding == NULL || slots_of(&hook->slots, binding, S_exclusive, S_hot) < 0) {
        PyErr_Clear();
        Py_DECREF(lock);
        return SLOW(hook);
    }
    Py_INCREF(binding);
    PyObject *enter, *exit;
    if (specials(&hook->specials, lock, &enter, &exit) < 0) {
        PyErr_Clear(); /* the twin raises what ``with`` raises */
        Py_DECREF(binding);
        Py_DECREF(lock);
        return SLOW(hook);
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
    if (Py_TYPE(state) == (PyTypeObject *)hook->refs[2]) { /* open: a rejection, or a half-open trial */
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
        bookkeep_at(hook->refs[3], after_args, 2, 1, start);
        goto leave;
    }
    if (Py_TYPE(result) == (PyTypeObject *)hook->refs[5]) { /* a generator's outcome comes at its end */
        goto leave;
    }
    double elapsed = now() - start;
    PyObject *row = SLOT(binding, hook->slots.a), *hot = SLOT(binding, hook->slots.b);
    if (row == NULL || hot == NULL || !is_fast(hot) || observe_row(row, elapsed) != 0) {
        PyObject *record_args[2] = {binding, NULL};
        bookkeep_at(hook->refs[4], record_args, 2, 1, elapsed);
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

/* -- OpenBlocks: where a wrapper's start waits for its exit -----------------------------------------
 * The starts of the blocks entered and not yet left, newest last, each with a reference to its
 * wrapper (so no other object can take its address while it waits), looked up by the wrapper from
 * the newest: a wrapper entered twice is left innermost first, and blocks that interleave (in
 * generators or tasks) or end in another thread are found wherever they are. No Python object is
 * made or hashed on the way. With OPEN_MAX blocks open, further ones are kept in the Python side's
 * dict, as the pure-Python twin keeps them all. One per instrumentation, cleared when it stops. */
#define OPEN_MAX 256

typedef struct {
    PyObject_HEAD
    int count;
    PyObject *owners[OPEN_MAX]; /* strong */
    double starts[OPEN_MAX];
} OpenBlocks;

static PyTypeObject OpenBlocksType;

static int open_push(OpenBlocks *blocks, PyObject *owner, double start) {
    if (blocks->count == OPEN_MAX) {
        return -1;
    }
    blocks->owners[blocks->count] = Py_NewRef(owner);
    blocks->starts[blocks->count] = start;
    blocks->count++;
    return 0;
}

static int open_find(OpenBlocks *blocks, PyObject *owner) {
    for (int i = blocks->count - 1; i >= 0; i--) {
        if (blocks->owners[i] == owner) {
            return i;
        }
    }
    return -1;
}

/* Forget block ``i`` and give its start. The table is whole again before the wrapper's reference
 * goes (which may run Python code). */
static double open_remove(OpenBlocks *blocks, int i) {
    double start = blocks->starts[i];
    PyObject *owner = blocks->owners[i];
    int after = blocks->count - i - 1;
    memmove(&blocks->owners[i], &blocks->owners[i + 1], (size_t)after * sizeof(PyObject *));
    memmove(&blocks->starts[i], &blocks->starts[i + 1], (size_t)after * sizeof(double));
    blocks->count--;
    Py_DECREF(owner);
    return start;
}

static PyObject *open_blocks_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    if (PyTuple_GET_SIZE(args) != 0 || (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0)) {
        PyErr_SetString(PyExc_TypeError, "OpenBlocks() takes no arguments");
        return NULL;
    }
    OpenBlocks *blocks = (OpenBlocks *)type->tp_alloc(type, 0);
    if (blocks != NULL) {
        blocks->count = 0;
    }
    return (PyObject *)blocks;
}

static PyObject *open_blocks_take(PyObject *op, PyObject *owner) {
    OpenBlocks *blocks = (OpenBlocks *)op;
    int i = open_find(blocks, owner);
    if (i < 0) {
        Py_RETURN_NONE;
    }
    return PyFloat_FromDouble(open_remove(blocks, i));
}

static int open_blocks_clear(PyObject *op) {
    OpenBlocks *blocks = (OpenBlocks *)op;
    while (blocks->count > 0) {
        open_remove(blocks, blocks->count - 1);
    }
    return 0;
}

static PyObject *open_blocks_forget(PyObject *op, PyObject *unused) {
    open_blocks_clear(op);
    Py_RETURN_NONE;
}

static PyObject *open_blocks_len(PyObject *op, PyObject *unused) {
    return PyLong_FromLong(((OpenBlocks *)op)->count);
}

static int open_blocks_traverse(PyObject *op, visitproc visit, void *arg) {
    OpenBlocks *blocks = (OpenBlocks *)op;
    for (int i = 0; i < blocks->count; i++) {
        Py_VISIT(blocks->owners[i]);
    }
    return 0;
}

static void open_blocks_dealloc(PyObject *op) {
    PyObject_GC_UnTrack(op);
    open_blocks_clear(op);
    Py_TYPE(op)->tp_free(op);
}

static PyMethodDef open_blocks_methods[] = {
    {"take", open_blocks_take, METH_O,
     "take(wrapper) -> float | None: the start of the wrapper's innermost open block, no longer open."},
    {"clear", open_blocks_forget, METH_NOARGS, "clear(): forget every open block."},
    {"open", open_blocks_len, METH_NOARGS, "open() -> int: how many blocks are open."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject OpenBlocksType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "otel_trading.instrumentation._native.OpenBlocks",
    .tp_doc = "The starts of the guarded blocks entered and not yet left (purgatory's wrappers).",
    .tp_basicsize = sizeof(OpenBlocks),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = open_blocks_new,
    .tp_dealloc = open_blocks_dealloc,
    .tp_traverse = open_blocks_traverse,
    .tp_clear = open_blocks_clear,
    .tp_methods = open_blocks_methods,
};

/* -- paired_enter: purgatory's ``SyncCircuitBreaker.__enter__(self)`` ------------------------------
 * refs: slow, starts (id(wrapper) -> start), opened (the rejection type), rejected, nested, blocks
 * (the OpenBlocks, where most starts wait instead of ``starts``).
 * Enters ``self.context``; its ``opened`` error is a rejection (``rejected(self)``); then the
 * start is kept in ``blocks`` (or, when full, under the wrapper's id in ``starts``, with
 * ``nested(key, start)`` when the wrapper is already in a block). */
static PyObject *paired_enter(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    Hook *hook = (Hook *)op;
    if (PyVectorcall_NARGS(nargsf) != 1 || kwnames != NULL) {
        return SLOW(hook);
    }
    PyObject *self = args[0];
    /* ``self.context.__enter__(); return self``: the body of the sync wrapper's enter and of the async
     * one's (which the async hook awaits), so one hook serves both. */
    PyObject *context = PyObject_GetAttr(self, S_context);
    if (context == NULL) {
        return NULL;
    }
    PyObject *entered = PyObject_CallMethodNoArgs(context, S_enter);
    Py_DECREF(context);
    if (entered != NULL) {
        Py_SETREF(entered, Py_NewRef(self));
    }
    if (entered == NULL) {
        if (PyErr_ExceptionMatches(hook->refs[2])) {
            bookkeep(hook->refs[3], &self, 1);
        }
        return NULL;
    }
    double began = now();
    if (open_push((OpenBlocks *)hook->refs[5], self, began) == 0) {
        return entered;
    }
    PyObject *start = PyFloat_FromDouble(began);
    PyObject *key = start != NULL ? id_key(self) : NULL;
    if (key == NULL) {
        Py_XDECREF(start);
        PyErr_Clear();
        return entered;
    }
    PyObject *kept = PyDict_SetDefault(hook->refs[1], key, start); /* borrowed */
    if (kept == NULL) {
        PyErr_Clear();
    } else if (kept != start) {
        PyObject *nested_args[2] = {key, start};
        bookkeep(hook->refs[4], nested_args, 2);
    }
    Py_DECREF(key);
    Py_DECREF(start);
    return entered;
}

/* -- paired_exit: purgatory's ``SyncCircuitBreaker.__exit__(self, exc_type, exc, tb)`` --------------
 * refs: slow, orig (the library's), starts, circuits (name -> circuit), record, blocks.
 * Fast path: no exception, one start kept for the wrapper, a known circuit whose series is hot:
 * the library's exit runs, then the block (enter to this call) is one histogram update. */
static PyObject *paired_exit(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    Hook *hook = (Hook *)op;
    double end = now();
    if (PyVectorcall_NARGS(nargsf) != 4 || kwnames != NULL || args[2] != Py_None) {
        return SLOW(hook);
    }
    PyObject *self = args[0];
    double began;
    PyObject *key = NULL; /* set when the start is in the dict */
    OpenBlocks *blocks = (OpenBlocks *)hook->refs[5];
    int open = open_find(blocks, self);
    if (open >= 0) {
        began = blocks->starts[open];
    } else {
        key = id_key(self);
        if (key == NULL) {
            return NULL;
        }
        PyObject *start = PyDict_GetItemWithError(hook->refs[2], key); /* borrowed */
        if (start == NULL || !PyFloat_CheckExact(start)) {
            Py_DECREF(key);
            PyErr_Clear();
            return SLOW(hook);
        }
        began = PyFloat_AS_DOUBLE(start);
    }
    PyObject *context = PyObject_GetAttr(self, S_context);
    PyObject *circuit = NULL; /* owned: what follows may run Python code */
    if (context != NULL && hook->circuit.key == context && hook->circuit.value != NULL &&
        PyDict_GET_SIZE(hook->refs[3]) == hook->circuit.size) {
        /* The circuit the last exit found for this very context: purgatory's in-memory repository
         * keeps one context per circuit, and a context's name is set once, when it is made. */
        circuit = Py_NewRef(hook->circuit.value);
    } else if (context != NULL) {
        PyObject *name = PyObject_GetAttr(context, S_name);
        circuit = name != NULL ? Py_XNewRef(PyDict_GetItemWithError(hook->refs[3], name)) : NULL;
        Py_XDECREF(name);
        if (circuit != NULL) {
            Py_XSETREF(hook->circuit.key, Py_NewRef(context));
            Py_XSETREF(hook->circuit.value, Py_NewRef(circuit));
            hook->circuit.size = PyDict_GET_SIZE(hook->refs[3]);
        }
    }
    Py_XDECREF(context);
    PyObject *local = circuit != NULL ? hot_local(&hook->slots, circuit) : NULL;
    if (local == NULL) {
        Py_XDECREF(circuit);
        Py_XDECREF(key);
        PyErr_Clear();
        return SLOW(hook);
    }
    /* The block is over whatever follows (the twin reads and forgets its start first too). Found
     * again: the lookups above may have run Python code that entered or left other blocks. */
    if (key == NULL) {
        open = open_find(blocks, self);
        if (open >= 0) {
            open_remove(blocks, open);
        }
    } else {
        if (PyDict_DelItem(hook->refs[2], key) < 0) {
            PyErr_Clear();
        }
        Py_DECREF(key);
    }
    PyObject *result = PyObject_Vectorcall(hook->refs[1], args, 4, NULL); /* the library's own */
    /* Recorded however the library's exit ended, as the Python twin's ``finally`` does. */
    if (result != NULL) {
        record_success(&hook->rows, circuit, local, hook->refs[4], end - began);
    } else {
        Pending error = pending_take();
        record_success(&hook->rows, circuit, local, hook->refs[4], end - began);
        pending_restore(error);
    }
    Py_DECREF(local);
    Py_DECREF(circuit);
    return result;
}

/* -- emitter_call: pyee's ``EventEmitter._call_handlers(self, event, args, kwargs)`` ----------------
 * refs: slow, orig, bindings (id(emitter) -> binding), sync and scheduled (the binding modes),
 * uplift ([EMIT_WRAPPERS or None]), current (the thread's dispatch holder), end (the twin's
 * bookkeeping: end(event, row, elapsed, error, dispatch)).
 * Fast path: a known emitter that is not uplifted, an app event with a hot series. The event is
 * published, pyee's own runs, and the event is processed when its handlers are done: at once when
 * they all ran inline, else when the dispatch one of them scheduled work in is finished. */
static void end_event(Hook *hook, PyObject *ev, PyObject *row, double elapsed, PyObject *error, PyObject *dispatch) {
    if (error == NULL && dispatch == NULL && observe_row(row, elapsed) == 0) {
        return;
    }
    PyObject *end_args[5] = {ev, row, NULL, error != NULL ? error : Py_None, dispatch != NULL ? dispatch : Py_None};
    bookkeep_at(hook->refs[7], end_args, 5, 2, elapsed);
}

/* pyee's ``EventEmitter._call_handlers(self, event, args, kwargs)`` (the shape the Python side
 * checked): the event's handlers copied under the emitter's lock, then each handed to
 * ``self._emit_run`` in order; True when there was at least one. */
static PyObject *pyee_call_handlers(Hook *hook, PyObject *self, PyObject *event, PyObject *args, PyObject *kwargs) {
    PyObject *lock = PyObject_GetAttr(self, S__lock);
    if (lock == NULL) {
        return NULL;
    }
    PyObject *enter, *exit;
    if (specials(&hook->specials, lock, &enter, &exit) < 0) {
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
        PyObject *handlers = PyObject_CallMethodOneArg(table, S_get_name, event);
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
    Hook *hook = (Hook *)op;
    if (PyVectorcall_NARGS(nargsf) != 4 || kwnames != NULL) {
        return SLOW(hook);
    }
    PyObject *self = args[0], *event = args[1];
    PyObject *binding = by_id(hook->refs[2], self); /* borrowed */
    if (binding == NULL || slots_of(&hook->slots2, binding, S_events, S_mode) < 0) {
        PyErr_Clear();
        return SLOW(hook);
    }
    PyObject *events = SLOT(binding, hook->slots2.a), *mode = SLOT(binding, hook->slots2.b);
    int sync = mode == hook->refs[3];
    if (events == NULL || !PyDict_CheckExact(events) || (!sync && mode != hook->refs[4])) {
        return SLOW(hook);
    }
    PyObject *wrappers = PyList_GET_ITEM(hook->refs[5], 0);
    if (wrappers != Py_None && PyObject_IsTrue(wrappers) != 0) { /* pyee.uplift in use */
        PyErr_Clear();
        return SLOW(hook);
    }
    /* The event's hash and equality may be Python code: hold the table while it is searched. */
    Py_INCREF(events);
    PyObject *ev = Py_XNewRef(PyDict_GetItemWithError(events, event)); /* None for pyee's own events */
    Py_DECREF(events);
    PyObject *local = ev != NULL && ev != Py_None ? hot_local(&hook->slots, ev) : NULL;
    if (local == NULL) {
        Py_XDECREF(ev);
        PyErr_Clear();
        return SLOW(hook);
    }
    PyObject *row = thread_row(&hook->rows, ev, local);
    Py_DECREF(local);
    if (row == NULL || !PyList_CheckExact(row) || PyList_GET_SIZE(row) <= 0) {
        Py_XDECREF(row);
        Py_DECREF(ev);
        return SLOW(hook);
    }
    PyObject *current = hook->refs[6], *saved = NULL, *marker = NULL;
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
            return SLOW(hook);
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
    PyObject *result = pyee_call_handlers(hook, self, event, args[2], args[3]);
    PyObject *error = result == NULL ? take_error() : NULL;
    if (sync) {
        if (error != NULL || PyObject_IsTrue(result) == 1) { /* handled: processed */
            end_event(hook, ev, row, now() - start, error, NULL);
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
                end_event(hook, ev, row, now() - start, NULL, NULL);
            }
        } else if (dispatch != NULL && dispatch != Py_None) {
            end_event(hook, ev, row, 0.0, NULL, dispatch);
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
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "otel_trading.instrumentation._native.StandIn",
    .tp_doc = "A pyee handler that already ran: gives back its result or raises its exception again.",
    .tp_basicsize = sizeof(StandIn),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_dealloc = stand_in_dealloc,
    .tp_traverse = stand_in_traverse,
    .tp_clear = stand_in_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(StandIn, vectorcall),
};

/* pyee's own ``_emit_run(self, stand_in, args, kwargs)`` with a StandIn for ``value`` (stolen). */
static PyObject *run_stand_in(Hook *hook, PyObject *const *args, PyObject *value, int raising) {
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
    PyObject *result = PyObject_Vectorcall(hook->refs[1], run_args, 4, NULL);
    Py_DECREF(stand_in);
    return result;
}

/* -- emit_run: pyee's ``AsyncIOEventEmitter._emit_run(self, f, args, kwargs)`` ----------------------
 * refs: slow, orig, current, on_error, after. While no event is recorded in this thread, pyee's own
 * runs. While one is, the handler runs here first: None (a sync handler's usual result) ends the
 * run, as in pyee's own; an ``Exception`` is counted (``on_error(dispatch)``) and any other result
 * goes through ``after(result, dispatch)`` (the twin: a coroutine comes back inside one that ends
 * the event when it does, a future is watched); then pyee's own runs with a StandIn for the
 * handler, so its scheduling and its ``error`` event are its own. */
static PyObject *emit_run(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    Hook *hook = (Hook *)op;
    if (PyVectorcall_NARGS(nargsf) != 4 || kwnames != NULL || !PyTuple_CheckExact(args[2]) ||
        !PyDict_CheckExact(args[3])) {
        return SLOW(hook);
    }
    PyObject *dispatch = PyObject_GetAttr(hook->refs[2], S_dispatch);
    if (dispatch == NULL) {
        PyErr_Clear();
        return SLOW(hook);
    }
    if (dispatch == Py_None) {
        Py_DECREF(dispatch);
        return PyObject_Vectorcall(hook->refs[1], args, 4, NULL);
    }
    PyObject *result = PyObject_Call(args[1], args[2], PyDict_GET_SIZE(args[3]) ? args[3] : NULL);
    if (result == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_Exception)) {
            Py_DECREF(dispatch);
            return NULL; /* pyee's own lets it through too */
        }
        PyObject *error = take_error();
        bookkeep(hook->refs[3], &dispatch, 1);
        Py_DECREF(dispatch);
        return run_stand_in(hook, args, error, 1);
    }
    if (result == Py_None) {
        Py_DECREF(dispatch);
        return result;
    }
    PyObject *after_args[2] = {result, dispatch};
    PyObject *given = PyObject_Vectorcall(hook->refs[4], after_args, 2, NULL);
    Py_DECREF(dispatch);
    if (given == NULL) { /* the twin reports its own errors; never lose the handler's result */
        PyErr_Clear();
        given = Py_NewRef(result);
    }
    Py_DECREF(result);
    return run_stand_in(hook, args, given, 0);
}

/* -- factories ------------------------------------------------------------------------------------ */
static PyObject *factory(vectorcallfunc behaviour, const char *name, Py_ssize_t want, PyObject *const *args,
                         Py_ssize_t nargs) {
    if (nargs != want) {
        PyErr_Format(PyExc_TypeError, "%s() takes %zd arguments (%zd given)", name, want, nargs);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) {
        if (args[i] == Py_None) {
            PyErr_Format(PyExc_TypeError, "%s(): argument %zd must not be None", name, i + 1);
            return NULL;
        }
    }
    if (!PyCallable_Check(args[0])) {
        PyErr_Format(PyExc_TypeError, "%s(): slow must be callable", name);
        return NULL;
    }
    return hook_make(behaviour, args, nargs);
}

#define FACTORY(fn, want, check)                                                                     \
    static PyObject *make_##fn(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {           \
        if (nargs == want && !(check)) {                                                              \
            PyErr_SetString(PyExc_TypeError, #fn "(): an argument has the wrong type");               \
            return NULL;                                                                              \
        }                                                                                             \
        return factory(fn, #fn, want, args, nargs);                                                   \
    }

FACTORY(guarded_call, 5, PyDict_CheckExact(args[1]))
FACTORY(paired_enter, 6,
        PyDict_CheckExact(args[1]) && PyExceptionClass_Check(args[2]) && Py_IS_TYPE(args[5], &OpenBlocksType))
FACTORY(paired_exit, 6, PyDict_CheckExact(args[2]) && PyDict_CheckExact(args[3]) && Py_IS_TYPE(args[5], &OpenBlocksType))
FACTORY(emitter_call, 8, PyDict_CheckExact(args[2]) && PyList_CheckExact(args[5]) && PyList_GET_SIZE(args[5]) == 1)
FACTORY(emit_run, 5, 1)
FACTORY(locked_call, 6, PyDict_CheckExact(args[1]) && PyType_Check(args[2]) && PyType_Check(args[5]))

/* -- module ------------------------------------------------------------------------------------ */
static PyMethodDef native_methods[] = {
    {"configure", configure, METH_VARARGS,
     "configure(bounds, sum, min, max, b0): the row layout every fast path writes."},
    {"observe", (PyCFunction)(void (*)(void))observe, METH_FASTCALL,
     "observe(row, value) -> bool: add value to the row's histogram columns; False if it is not a row."},
    {"guarded_call", (PyCFunction)(void (*)(void))make_guarded_call, METH_FASTCALL,
     "guarded_call(slow, entries, closed, raised, record): circuitbreaker's call()."},
    {"locked_call", (PyCFunction)(void (*)(void))make_locked_call, METH_FASTCALL,
     "locked_call(slow, bindings, open_state, after_error, record, generator): pybreaker's call()."},
    {"paired_enter", (PyCFunction)(void (*)(void))make_paired_enter, METH_FASTCALL,
     "paired_enter(slow, starts, opened, rejected, nested, blocks): purgatory's SyncCircuitBreaker.__enter__."},
    {"paired_exit", (PyCFunction)(void (*)(void))make_paired_exit, METH_FASTCALL,
     "paired_exit(slow, orig, starts, circuits, record, blocks): purgatory's SyncCircuitBreaker.__exit__."},
    {"emitter_call", (PyCFunction)(void (*)(void))make_emitter_call, METH_FASTCALL,
     "emitter_call(slow, orig, bindings, sync, scheduled, uplift, current, end): pyee's _call_handlers."},
    {"emit_run", (PyCFunction)(void (*)(void))make_emit_run, METH_FASTCALL,
     "emit_run(slow, orig, current, on_error, after): pyee's AsyncIOEventEmitter._emit_run."},
    {NULL, NULL, 0, NULL},
};

/* Multi-phase initialisation (PEP 489). The module keeps process-wide state in statics (the row
 * layout, interned names, static types), so it is not for subinterpreters; and its exec may run more
 * than once (importlib.reload, or an import after its sys.modules entry went): whatever is already
 * made is kept, never made again over a reference still held. */
static int native_exec(PyObject *module) {
#define INTERN(var, text)                                                                            \
    if (var == NULL && (var = PyUnicode_InternFromString(text)) == NULL) return -1;
    INTERN(S_row, "row");
    INTERN(S_local, "local");
    INTERN(S_counted, "counted");
    INTERN(S_hot, "hot");
    INTERN(S_fast, "fast");
    INTERN(S__state, "_state");
    INTERN(S_enter, "__enter__");
    INTERN(S_exit, "__exit__");
    INTERN(S_context, "context");
    INTERN(S_name, "name");
    INTERN(S_events, "events");
    INTERN(S_mode, "mode");
    INTERN(S_dispatch, "dispatch");
    INTERN(S_wrapped, "__wrapped__");
    INTERN(S_class, "__class__");
    INTERN(S__lock, "_lock");
    INTERN(S__events, "_events");
    INTERN(S_values, "values");
    INTERN(S__emit_run, "_emit_run");
    INTERN(S_get_name, "get");
    INTERN(S_exclusive, "exclusive");
    INTERN(S_state, "state");
    INTERN(S_call, "call");
    INTERN(S_self, "self");
    INTERN(S_func, "func");
#undef INTERN
    /* PyModule_AddType readies a type only once, and names it after the last part of tp_name. */
    if (PyModule_AddType(module, &HookType) < 0 || PyModule_AddType(module, &StandInType) < 0 ||
        PyModule_AddType(module, &OpenBlocksType) < 0) {
        return -1;
    }
    return 0;
}

static PyModuleDef_Slot native_slots[] = {
    {Py_mod_exec, native_exec},
#if PY_VERSION_HEX >= 0x030C0000
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED},
#endif
    /* No Py_mod_gil: the statics and the rows are only safe under the GIL. */
    {0, NULL},
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_native",
    .m_doc = "Compiled hot paths of the library instrumentations.",
    .m_size = 0, /* no per-module state (multi-phase initialisation needs it non-negative) */
    .m_methods = native_methods,
    .m_slots = native_slots,
};

PyMODINIT_FUNC PyInit__native(void) { return PyModuleDef_Init(&native_module); }
