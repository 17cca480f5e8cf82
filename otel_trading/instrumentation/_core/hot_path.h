/* The shared core of the compiled hot paths: what every library's ``<library>/_hooks.c`` needs.
 *
 * Each library home with compiled paths has one extension module, ``otel_trading.instrumentation.
 * <library>._hooks``, built from its ``_hooks.c``, which defines HOOKS_MODULE (its dotted name) and
 * HOOK_NAMES (the names its C reads), then includes this header. Everything here is static: each
 * module has its own copy, with its own row layout (set by its ``configure``), interned names and
 * types. This header names no library. A ``_hooks.c`` holds only what is its library's: for each
 * hook kind its struct, HOOK_KIND (its type, and its factory with the fields it takes) and its
 * behaviour; then HOOKS_MODULE_INIT (the module, with its factories' docs).
 *
 * Why C: the libraries' own closed-path calls cost 400-700 ns, and a Python wrapper's frame, two
 * perf_counter() calls and a histogram update in Python already cost more than the 30% budget.
 * A hook stands in for the wrapper's Python frame, reads CLOCK_MONOTONIC (the clock
 * time.perf_counter reads on POSIX, so starts and ends mix freely with the Python twins') and
 * updates the thread's row while holding the GIL, so a collection never sees half an update.
 * Whatever is off a fast path goes to the hook's pure-Python twin (``slow``), which decides as it
 * always did; so does a call made while OpenTelemetry's current context holds something (a span:
 * the twin records its duration with a trace exemplar; see ``context_held`` in the recording layer's
 * ``_rows.h``). Every hook counts the calls it served itself and the calls it handed to the twin.
 *
 * What the hooks read of otel-trading's own objects (an entry's ``local`` and ``hot``, a series'
 * ``fast``, ...) they read at slot offsets found when the hook is made, from the class its factory
 * is given (``entry_type=``, ``series_type=``): a class that lacks one of those slots is refused
 * then, with a TypeError naming each missing one, so a renamed slot fails at instrument time
 * instead of sending every call down the slow path. What they read of the library is listed at the
 * top of each ``_hooks.c`` and in its module's ``RELIES_ON``.
 *
 * Only for the GIL build: counters and caches are plain C, guarded by the GIL (setup.py builds no
 * module on a free-threaded interpreter, and the loader would not use one).
 */
#ifndef OTEL_TRADING_HOT_PATH_H
#define OTEL_TRADING_HOT_PATH_H

#ifndef HOOKS_MODULE
#error "define HOOKS_MODULE (the module's dotted name) before including hot_path.h"
#endif

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

/* The row layout, observe_row, context_held and configure, shared with the recording layer's module. */
#include "_rows.h"

/* Python.h has the Py_-prefixed member flags since 3.12, which deprecates structmember.h's. */
#if PY_VERSION_HEX < 0x030C0000
#include <structmember.h>
#define Py_T_OBJECT_EX T_OBJECT_EX
#define Py_READONLY READONLY
#endif

/* Every function here is static inline: a module that does not use one gets no warning for it. */

/* -- names: every module's, and its own (HOOK_NAMES, defined before including this header) ---------- */
static PyObject *S_row, *S_fast, *S_enter, *S_exit, *S_wrapped, *S_class, *S_self, *S_func;

/* A module lists the names its C reads as ``#define HOOK_NAMES(X) X(_lock) X(state)``: each is
 * ``S_<name>``, interned when the module is executed. */
#ifndef HOOK_NAMES
#define HOOK_NAMES(X)
#endif
#define HOOK_NAME_DECLARE(name) static PyObject *S_##name;
#define HOOK_NAME_ROW(name) {&S_##name, #name},
HOOK_NAMES(HOOK_NAME_DECLARE)

typedef struct {
    PyObject **name;
    const char *text;
} Name;

/* Every name a module interns when it is executed. */
static const Name NAMES[] = {
    {&S_row, "row"}, {&S_fast, "fast"}, {&S_enter, "__enter__"}, {&S_exit, "__exit__"}, {&S_wrapped, "__wrapped__"},
    {&S_class, "__class__"}, {&S_self, "self"}, {&S_func, "func"},
    HOOK_NAMES(HOOK_NAME_ROW)
    {NULL, NULL},
};

/* Intern ``text`` into ``*name`` unless a previous exec of the module did: 0, or -1 with an error. */
static inline int intern_name(PyObject **name, const char *text) {
    if (*name == NULL) {
        *name = PyUnicode_InternFromString(text);
    }
    return *name != NULL ? 0 : -1;
}

static inline double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* observe(row, value) -> bool: the histogram update, for Python callers (the tests). */
static inline PyObject *observe(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
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

/* -- the thread's row ----------------------------------------------------------------------------
 * A row-owning object of ours (an entry, a circuit, an event) keeps its per-thread rows' ``local``
 * (a threading.local whose ``row`` the rows' ``row()`` sets, once per thread). The last row a hook
 * found is kept: for the same ``local`` in the same thread it is the same row (thread-state ids are
 * never reused, so a row of a thread that ended never matches again). */
typedef struct {
    PyObject *local; /* strong */
    uint64_t thread;
    PyObject *row; /* strong */
} RowCache;

/* The calling thread's row in ``local``: a new reference, or NULL with no exception set when this
 * thread has none yet (the hook's twin makes it; the next call finds it). */
static inline PyObject *thread_row(RowCache *cache, PyObject *local) {
    uint64_t thread = PyThreadState_GetID(PyThreadState_Get());
    if (cache->row != NULL && cache->local == local && cache->thread == thread) {
        return Py_NewRef(cache->row);
    }
    PyObject *row = PyObject_GetAttr(local, S_row);
    if (row == NULL) {
        PyErr_Clear();
        return NULL;
    }
    Py_XSETREF(cache->local, Py_NewRef(local));
    Py_XSETREF(cache->row, Py_NewRef(row));
    cache->thread = thread;
    return row;
}

/* -- our own objects' slots, checked when a hook is made ------------------------------------------- */
#define SLOT(obj, offset) (*(PyObject **)((char *)(obj) + (offset)))

/* The offset of a writable object ``__slots__`` member ``name`` of ``type``, or -1 when it has none. */
static inline Py_ssize_t member_offset(PyTypeObject *type, const char *name) {
    PyObject *descr = PyObject_GetAttrString((PyObject *)type, name);
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

/* Append ``'name'`` to a TypeError message being built in ``*text`` (a new string each time). */
static inline int name_missing(PyObject **text, const char *name) {
    PyObject *more = *text == NULL ? PyUnicode_FromFormat("'%s'", name) : PyUnicode_FromFormat("%U, '%s'", *text, name);
    Py_XSETREF(*text, more);
    return more != NULL ? 0 : -1;
}

/* One of the homes' row-owning classes (a breaker's entry, a circuit, an event): its ``local`` and
 * ``hot`` (a factory's ``CLASS_ARG(Kind, layout, local, hot)``). */
typedef struct {
    PyTypeObject *type; /* strong */
    Py_ssize_t local, hot;
} EntryLayout;

/* The timed series class (a ``hot`` that is not one is never fast: the untimed stand-in), a
 * factory's ``SERIES_ARG(Kind)``. */
typedef struct {
    PyTypeObject *type; /* strong */
    Py_ssize_t fast;
} SeriesLayout;

/* True when ``hot`` (an entry's ``hot``: its series, or the untimed stand-in) is fast, that is, its
 * series is bound to the rows. Runs no Python code for a series; reads ``fast`` by name otherwise. */
static inline int is_fast(SeriesLayout *series, PyObject *hot) {
    if (Py_IS_TYPE(hot, series->type)) {
        return SLOT(hot, series->fast) == Py_True;
    }
    PyObject *flag = PyObject_GetAttr(hot, S_fast);
    if (flag == NULL) {
        PyErr_Clear();
        return 0;
    }
    int fast = flag == Py_True;
    Py_DECREF(flag);
    return fast;
}

/* The ``local`` slot (a new reference) of ``entry`` (owned by the caller), an instance of the
 * layout's class whose series is fast; NULL, with no exception set, when it is not. */
static inline PyObject *hot_local(EntryLayout *layout, SeriesLayout *series, PyObject *entry) {
    if (!Py_IS_TYPE(entry, layout->type)) {
        return NULL;
    }
    PyObject *local = SLOT(entry, layout->local), *hot = SLOT(entry, layout->hot);
    if (local == NULL || hot == NULL) {
        return NULL;
    }
    /* Owned while ``fast`` is read: that may run Python code that lets another thread drop them. */
    Py_INCREF(local);
    Py_INCREF(hot);
    int fast = is_fast(series, hot);
    Py_DECREF(hot);
    if (!fast) {
        Py_DECREF(local);
        return NULL;
    }
    return local;
}

/* ``name`` must be found on ``type`` (a class attribute: the default of a threading.local's field). */
static inline int require_attribute(const char *factory, const char *argument, PyTypeObject *type, PyObject *name) {
    if (PyObject_HasAttr((PyObject *)type, name)) {
        return 0;
    }
    PyErr_Format(PyExc_TypeError, "%s(): %s (%.200s) has no attribute %R, which the compiled hot path reads", factory,
                 argument, type->tp_name, name);
    return -1;
}

/* -- special methods ------------------------------------------------------------------------------
 * ``name`` found through ``type``'s MRO, descriptors not invoked: 1 with a new reference in
 * ``*found``, 0 when missing, -1 with an exception set. A public PyType_Lookup with that contract
 * was proposed for 3.15 (gh-139847) but its pull request was closed unmerged, so a bare version
 * check would not compile: a build opts in with -DNATIVE_HAVE_PYTYPE_LOOKUP once a release has it.
 * Until then the private _PyType_Lookup (3.10 to 3.14, and 3.15's development headers) stands in. */
#if PY_VERSION_HEX >= 0x030F0000 && defined(NATIVE_HAVE_PYTYPE_LOOKUP)
static inline int type_lookup(PyTypeObject *type, PyObject *name, PyObject **found) {
    return PyType_Lookup(type, name, found);
}
#else
static inline int type_lookup(PyTypeObject *type, PyObject *name, PyObject **found) {
    /* Borrowed, so owned before any Python code can run. It sets no exception (it clears its own):
     * NULL with one set means the caller's was pending, which goes on rather than a TypeError. */
    *found = Py_XNewRef(_PyType_Lookup(type, name));
    return *found != NULL ? 1 : PyErr_Occurred() ? -1 : 0;
}
#endif

/* ``type(obj).<name>`` found as the interpreter finds a special method: on the type only, through
 * its MRO (never on the metaclass). A new reference; TypeError as ``with`` raises when missing. */
static inline PyObject *special(PyObject *obj, PyObject *name) {
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
static inline PyObject *call_special(PyObject *method, PyObject *obj, PyObject *const *rest, Py_ssize_t n) {
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

/* A type's ``__enter__`` and ``__exit__``, kept while its version tag is unchanged (CPython gives a
 * type a new tag whenever it or a base is modified), as the interpreter's own caches do. */
typedef struct {
    PyTypeObject *type; /* borrowed: compared by identity only, and re-checked by the tag */
    unsigned int tag;
    PyObject *enter; /* strong, as ``exit``: NULL until found, and once the hook is cleared */
    PyObject *exit;
} SpecialCache;

/* New references to type(obj).__enter__ and __exit__ (for call_special): 0, or -1 with an error. */
static inline int specials(SpecialCache *cache, PyObject *obj, PyObject **enter, PyObject **exit) {
    PyTypeObject *type = Py_TYPE(obj);
    int valid = cache->enter != NULL && cache->type == type && cache->tag != 0 && type->tp_version_tag == cache->tag;
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

/* -- the exception being handled (3.10; 3.11+) ------------------------------------------------------
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
static inline void handling_begin(Handled *saved, PyObject *error) {
    PyObject *handled = PyErr_GetHandledException(); /* new reference, or NULL */
    Py_ssize_t count = handled != NULL ? Py_REFCNT(handled) : 0;
    PyErr_SetHandledException(NULL);
    if (handled != NULL && Py_REFCNT(handled) == count) {
        Py_CLEAR(handled); /* an outer item's */
    }
    saved->value = handled;
    PyErr_SetHandledException(error); /* not stolen */
}

static inline void handling_end(Handled *saved) {
    PyErr_SetHandledException(saved->value);
    Py_XDECREF(saved->value);
}
#else
static inline void handling_begin(Handled *saved, PyObject *error) {
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

static inline void handling_end(Handled *saved) {
    PyErr_SetExcInfo(saved->type, saved->value, saved->traceback); /* stolen */
}
#endif

/* ``exit(obj, type(error), error, traceback)`` for a block that raised ``error``, as ``with`` calls
 * it: 1 when it returned true (the exception is suppressed), 0 when not (the caller re-raises
 * ``error``), -1 when it raised (that exception is set, chained to ``error`` by the interpreter). */
static inline int exit_with_error(PyObject *exit, PyObject *obj, PyObject *error) {
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
static inline int exit_normally(PyObject *exit, PyObject *obj) {
    PyObject *rest[3] = {Py_None, Py_None, Py_None};
    PyObject *result = call_special(exit, obj, rest, 3);
    if (result == NULL) {
        return -1;
    }
    Py_DECREF(result);
    return 0;
}

/* -- the exception being raised (3.10-3.11; 3.12+) ---------------------------------------------------
 * 3.12 keeps it as one normalized object with its traceback attached (PyErr_GetRaisedException);
 * before, it is PyErr_Fetch's three parts, which 3.12 deprecates. */

/* The exception being raised, normalized, with its traceback attached; the error indicator is clear. */
static inline PyObject *take_error(void) {
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
static inline void give_error(PyObject *value) {
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

static inline Pending pending_take(void) {
    Pending pending;
#if PY_VERSION_HEX >= 0x030C0000
    pending.exc = PyErr_GetRaisedException();
#else
    PyErr_Fetch(&pending.type, &pending.value, &pending.tb);
#endif
    return pending;
}

static inline void pending_restore(Pending pending) {
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(pending.exc);
#else
    PyErr_Restore(pending.type, pending.value, pending.tb);
#endif
}

static inline void pending_drop(Pending pending) {
#if PY_VERSION_HEX >= 0x030C0000
    Py_XDECREF(pending.exc);
#else
    Py_XDECREF(pending.type);
    Py_XDECREF(pending.value);
    Py_XDECREF(pending.tb);
#endif
}

/* -- calling the Python twins' bookkeeping ---------------------------------------------------------- */

/* Call a Python twin's bookkeeping helper; its result and errors are dropped (the helpers report
 * their own errors), and an exception being raised, if any, is kept. */
static inline void bookkeep(PyObject *helper, PyObject *const *args, Py_ssize_t n) {
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
static inline void bookkeep_at(PyObject *helper, PyObject **args, Py_ssize_t n, Py_ssize_t at, double value) {
    PyObject *number = PyFloat_FromDouble(value);
    if (number == NULL) {
        PyErr_Clear();
        return;
    }
    args[at] = number;
    bookkeep(helper, (PyObject *const *)args, n);
    Py_DECREF(number);
}

/* A success of ``elapsed`` seconds on ``row`` (the thread's row of ``owner``); when that row is not
 * of the configured layout, ``record(owner, elapsed)`` (the Python twin's) does it. */
static inline void record_success(PyObject *row, PyObject *owner, PyObject *record, double elapsed) {
    if (observe_row(row, elapsed) != 0) {
        PyObject *args[2] = {owner, NULL};
        bookkeep_at(record, args, 2, 1, elapsed);
    }
}

static inline PyObject *id_key(PyObject *obj) { return PyLong_FromVoidPtr(obj); }

/* ``table.get(id(obj))`` for the twins' id-keyed tables: a borrowed reference, or NULL with no
 * exception set (not found, or no memory for the key: either way the slow path takes the call). */
static inline PyObject *by_id(PyObject *table, PyObject *obj) {
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

/* Keyword arguments a ``call(self, func, *args, **kwargs)`` binds itself: the library raises
 * TypeError for them, so such calls go to the twin, which has the library's signature. */
static inline int names_a_parameter(PyObject *kwnames) {
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

/* -- the hook kinds' fields: a factory's keyword arguments, and what a hook owns -------------------- */
typedef enum {
    ANY,             /* any object but None */
    CALLABLE,        /* a callable */
    A_CLASS,         /* a type */
    AN_EXCEPTION,    /* an exception class */
    EXACTLY,         /* an instance of ``of`` itself, not of a subclass */
} Expect;

#define SLOTS_MAX 2 /* read on one class of ours */

/* One ``PyObject *`` field of a hook kind's struct. A kind lists its fields (HOOK_KIND's arguments,
 * its table ``<factory>_fields``, ended by END_FIELDS): its factory takes each named one as the keyword
 * argument of that name (after ``slow``, every kind's), checks it and keeps it; the others are the
 * hook's own references (its caches'). The hook's traverse and clear go through them all. */
typedef struct {
    const char *name;                 /* the keyword; NULL for a reference no argument sets */
    Py_ssize_t offset;                /* of the field in the kind's struct (0 ends a table) */
    Expect expect;
    PyTypeObject *of;                 /* for EXACTLY */
    const char *slots[SLOTS_MAX + 1]; /* for a class of ours: the object slots the C reads (NULL-ended), */
    Py_ssize_t slot_at[SLOTS_MAX];    /* and where in the kind's struct each one's offset is kept */
} Field;

/* The keyword argument ``name``, kept in the field of that name: ``expect`` says what it must be;
 * ARG_OF's is an instance of ``type`` itself (EXACTLY). */
#define ARG(Kind, name, expect) {#name, offsetof(Kind, name), expect, NULL, {NULL}, {0}}
#define ARG_OF(Kind, name, type) {#name, offsetof(Kind, name), EXACTLY, type, {NULL}, {0}}
/* ``<layout>_type``: a class of ours, kept in ``layout.type``, whose object slots ``a`` and ``b`` the C
 * reads at the offsets kept in ``layout.a`` and ``layout.b`` (a class lacking one is refused). */
#define CLASS_ARG(Kind, layout, a, b)                                                                   \
    {#layout "_type", offsetof(Kind, layout.type), A_CLASS, NULL, {#a, #b, NULL},                       \
     {offsetof(Kind, layout.a), offsetof(Kind, layout.b)}}
/* ``series_type``: the timed series class, in the SeriesLayout ``series``. */
#define SERIES_ARG(Kind)                                                                                \
    {"series_type", offsetof(Kind, series.type), A_CLASS, NULL, {"fast", NULL}, {offsetof(Kind, series.fast)}}
/* A reference the hook owns that no argument sets (a cache's). */
#define OWNS(Kind, member) {NULL, offsetof(Kind, member), ANY, NULL, {NULL}, {0}}
#define END_FIELDS {NULL, 0, ANY, NULL, {NULL}, {0}}

/* -- Hook: a replacement method ------------------------------------------------------------------
 * The base of every hook kind (each a subtype with its own struct, whose first member is this): it
 * binds like a function, takes functools.update_wrapper's attributes, introspects as the function it
 * replaces, and counts its calls. ``fast_path_counts`` is ``(hits, misses)``: the calls it served
 * itself, and the calls it handed to ``slow`` (its pure-Python twin). */
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *dict;
    PyObject *weakrefs;
    PyObject *slow;               /* the pure-Python twin */
    const Field *fields;          /* the kind's (its own references besides the head's) */
    unsigned long long calls;     /* every call */
    unsigned long long misses;    /* the calls handed to ``slow`` (those in a span's context too) */
    RowCache rows;                /* the caches of the kinds that use them */
    SpecialCache specials;
} Hook;

/* The head's references: ``slow`` (every factory's first argument), then the others it owns. */
static const Field HOOK_FIELDS[] = {
    ARG(Hook, slow, CALLABLE), OWNS(Hook, dict), OWNS(Hook, rows.local), OWNS(Hook, rows.row),
    OWNS(Hook, specials.enter), OWNS(Hook, specials.exit), END_FIELDS,
};

/* At the top of every hook kind's behaviour, ``Kind *h = HOOK_CALLED(Kind);``: one more call. */
static inline Hook *hook_called(PyObject *op) {
    Hook *hook = (Hook *)op;
    hook->calls++;
    return hook;
}
#define HOOK_CALLED(Kind) ((Kind *)hook_called(op))

/* Hand the call to the twin (a miss), from a hook kind's behaviour (its parameters in scope). */
static inline PyObject *hook_slow(Hook *hook, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    hook->misses++;
    return PyObject_Vectorcall(hook->slow, args, nargsf, kwnames);
}
#define SLOW(h) hook_slow(&(h)->hook, args, nargsf, kwnames)

/* Every kind's traverse, and with no ``visit`` its clear: the head's references, then the kind's. */
static inline int hook_traverse(PyObject *op, visitproc visit, void *arg) {
    const Field *const tables[] = {HOOK_FIELDS, ((Hook *)op)->fields};
    for (size_t t = 0; t < sizeof(tables) / sizeof(tables[0]); t++) {
        for (const Field *f = tables[t]; f != NULL && f->offset != 0; f++) {
            if (visit == NULL) {
                Py_CLEAR(SLOT(op, f->offset));
            } else {
                Py_VISIT(SLOT(op, f->offset));
            }
        }
    }
    return 0;
}

static inline int hook_clear(PyObject *op) { return hook_traverse(op, NULL, NULL); }

static inline void hook_dealloc(PyObject *op) {
    PyObject_GC_UnTrack(op);
    if (((Hook *)op)->weakrefs != NULL) {
        PyObject_ClearWeakRefs(op);
    }
    hook_clear(op);
    PyObject_GC_Del(op);
}

/* A function stored on a class binds to the instance; so does a hook. */
static inline PyObject *hook_get(PyObject *op, PyObject *obj, PyObject *type) {
    if (obj == NULL || obj == Py_None) {
        return Py_NewRef(op);
    }
    return PyMethod_New(op, obj);
}

/* The function a hook stands in for (``__wrapped__``, set by functools.update_wrapper): a new
 * reference, or NULL, with an exception set only if looking it up failed. */
static inline PyObject *hook_wrapped(PyObject *op) {
    Hook *hook = (Hook *)op;
    PyObject *wrapped = hook->dict != NULL ? PyDict_GetItemWithError(hook->dict, S_wrapped) : NULL;
    return Py_XNewRef(wrapped);
}

/* Introspection sees the replaced function, as with wrapt's proxies that contrib instrumentations
 * install: ``__class__`` is the wrapped function's (so inspect.isfunction() holds), and attributes
 * a hook does not have (``__code__``, ``__defaults__``, ...) are read from it. */
static inline PyObject *hook_class(PyObject *op, void *closure) {
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

static inline PyObject *hook_getattro(PyObject *op, PyObject *name) {
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

/* (hits, misses): plain counters under the GIL, read without a lock. */
static inline PyObject *hook_counts(PyObject *op, void *closure) {
    Hook *hook = (Hook *)op;
    return Py_BuildValue("(KK)", hook->calls - hook->misses, hook->misses);
}

static PyGetSetDef hook_getset[] = {
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {"__class__", hook_class, NULL, NULL, NULL},
    {"fast_path_counts", hook_counts, NULL,
     "(hits, misses): the calls this hook served itself, and those it handed to its pure-Python twin "
     "(unusual calls, and those made while OpenTelemetry's context holds a span).", NULL},
    {NULL},
};

/* The head of a static type's initializer: ``Name`` is its struct, and its name in the module. */
#define TYPE_HEAD(Name, doc)                                                                            \
    PyVarObject_HEAD_INIT(NULL, 0) .tp_name = HOOKS_MODULE "." #Name, .tp_doc = doc, .tp_basicsize = sizeof(Name)

#define HOOK_FLAGS \
    (Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_METHOD_DESCRIPTOR)

/* The slots of Hook that each kind has too. */
#define HOOK_SLOTS                                                                                      \
    .tp_dealloc = hook_dealloc, .tp_traverse = hook_traverse, .tp_clear = hook_clear,                   \
    .tp_call = PyVectorcall_Call, .tp_vectorcall_offset = offsetof(Hook, vectorcall), .tp_descr_get = hook_get, \
    .tp_getattro = hook_getattro

static PyTypeObject HookType = {
    TYPE_HEAD(Hook, "A compiled replacement method installed by otel-trading's instrumentation."),
    .tp_flags = HOOK_FLAGS | Py_TPFLAGS_BASETYPE,
    HOOK_SLOTS,
    .tp_dictoffset = offsetof(Hook, dict),
    .tp_weaklistoffset = offsetof(Hook, weakrefs),
    .tp_getset = hook_getset,
};

/* -- factories: keyword arguments only, each stored in the field of the same name ----------------- */
/* Whether ``key`` is the keyword of one of ``fields``. */
static inline int field_named(const Field *fields, PyObject *key) {
    for (const Field *f = fields; f->offset != 0; f++) {
        if (f->name != NULL && PyUnicode_CompareWithASCIIString(key, f->name) == 0) {
            return 1;
        }
    }
    return 0;
}

/* Each named field's argument in ``kwargs`` is there and what it must be: 0, or -1 with a TypeError. */
static inline int check_arguments(const char *factory, const Field *fields, PyObject *kwargs) {
    for (const Field *f = fields; f->offset != 0; f++) {
        if (f->name == NULL) {
            continue;
        }
        PyObject *value = kwargs != NULL ? PyDict_GetItemString(kwargs, f->name) : NULL; /* borrowed */
        const char *want = NULL;
        if (value == NULL) {
            PyErr_Format(PyExc_TypeError, "%s() missing keyword argument '%s'", factory, f->name);
            return -1;
        } else if (value == Py_None) {
            PyErr_Format(PyExc_TypeError, "%s(): '%s' must not be None", factory, f->name);
            return -1;
        } else if (f->expect == CALLABLE && !PyCallable_Check(value)) {
            want = "callable";
        } else if (f->expect == A_CLASS && !PyType_Check(value)) {
            want = "a class";
        } else if (f->expect == AN_EXCEPTION && !PyExceptionClass_Check(value)) {
            want = "an exception class";
        } else if (f->expect == EXACTLY && !Py_IS_TYPE(value, f->of)) {
            want = f->of->tp_name;
        }
        if (want != NULL) {
            PyErr_Format(PyExc_TypeError, "%s(): '%s' must be %s%s", factory, f->name, f->expect == EXACTLY ? "a " : "",
                         want);
            return -1;
        }
    }
    return 0;
}

/* The offsets of the object slots the C reads on the class of a field (``<layout>_type=``), kept in
 * the hook: 0, or -1 with a TypeError naming every missing one. */
static inline int read_slots(const char *factory, const Field *f, PyObject *hook) {
    PyTypeObject *type = (PyTypeObject *)SLOT(hook, f->offset);
    PyObject *missing = NULL;
    int count = 0;
    for (int i = 0; i < SLOTS_MAX && f->slots[i] != NULL; i++) {
        Py_ssize_t offset = member_offset(type, f->slots[i]);
        *(Py_ssize_t *)((char *)hook + f->slot_at[i]) = offset;
        if (offset < 0) {
            count++;
            if (name_missing(&missing, f->slots[i]) < 0) {
                return -1;
            }
        }
    }
    if (missing != NULL) {
        PyErr_Format(PyExc_TypeError,
                     "%s(): %s=%.200s has no slot%s %U (the compiled hot path reads %s at %s: each must be an "
                     "object member of its __slots__)",
                     factory, f->name, type->tp_name, count > 1 ? "s" : "", missing, count > 1 ? "them" : "it",
                     count > 1 ? "their offsets" : "its offset");
        Py_DECREF(missing);
        return -1;
    }
    return 0;
}

/* A kind's factory: a new hook of ``type`` running ``behaviour``, its named fields (``slow``, then
 * ``fields``') set from ``kwargs``, each required and checked, the slots of our classes among them
 * found, then ``check`` (or NULL) passed; every other field of the struct zeroed. */
static inline PyObject *hook_new(PyTypeObject *type, vectorcallfunc behaviour, const char *factory,
                                 const Field *fields, int (*check)(PyObject *hook, const char *factory),
                                 PyObject *args, PyObject *kwargs) {
    if (PyTuple_GET_SIZE(args) != 0) {
        PyErr_Format(PyExc_TypeError, "%s() takes keyword arguments only", factory);
        return NULL;
    }
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (kwargs != NULL && PyDict_Next(kwargs, &pos, &key, &value)) {
        if (!field_named(HOOK_FIELDS, key) && !field_named(fields, key)) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument %R", factory, key);
            return NULL;
        }
    }
    if (check_arguments(factory, HOOK_FIELDS, kwargs) < 0 || check_arguments(factory, fields, kwargs) < 0) {
        return NULL;
    }
    Hook *hook = PyObject_GC_New(Hook, type);
    if (hook == NULL) {
        return NULL;
    }
    memset((char *)hook + sizeof(PyObject), 0, (size_t)type->tp_basicsize - sizeof(PyObject));
    hook->vectorcall = behaviour;
    hook->slow = Py_NewRef(PyDict_GetItemString(kwargs, "slow"));
    hook->fields = fields;
    for (const Field *f = fields; f->offset != 0; f++) {
        if (f->name != NULL) {
            SLOT(hook, f->offset) = Py_NewRef(PyDict_GetItemString(kwargs, f->name));
        }
    }
    PyObject *op = (PyObject *)hook;
    for (const Field *f = fields; f->offset != 0; f++) {
        if (f->slots[0] != NULL && read_slots(factory, f, op) < 0) {
            Py_DECREF(op);
            return NULL;
        }
    }
    if (check != NULL && check(op, factory) < 0) {
        Py_DECREF(op);
        return NULL;
    }
    PyObject_GC_Track(op);
    return op;
}

/* A hook kind, after its struct ``Kind`` (first member ``Hook hook``): ``KindType``, its type (a
 * subtype of Hook, documented by ``doc``), and ``make_<name>``, its factory (FACTORY_METHOD in the
 * module), which takes the fields the rest of the arguments list (``<name>_fields``: ARG, ARG_OF,
 * CLASS_ARG, SERIES_ARG, OWNS), checks them, then ``check`` (or NULL: what it checks besides), and
 * makes a hook running the behaviour ``name``, defined after. */
#define HOOK_KIND(Kind, name, check, doc, ...)                                                           \
    static PyObject *name(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames);       \
    static const Field name##_fields[] = {__VA_ARGS__, END_FIELDS};                                     \
    static PyTypeObject Kind##Type = {TYPE_HEAD(Kind, doc), .tp_flags = HOOK_FLAGS, HOOK_SLOTS, .tp_base = &HookType}; \
    static PyObject *make_##name(PyObject *module, PyObject *args, PyObject *kwargs) {                  \
        return hook_new(&Kind##Type, name, #name, name##_fields, check, args, kwargs);                   \
    }

/* -- the module ------------------------------------------------------------------------------------ */
#define HOT_PATH_METHODS                                                                                       \
    {"configure", configure, METH_VARARGS,                                                                     \
     "configure(bounds, sum, min, max, b0, context=None): the row layout every fast path of this module "      \
     "writes, and the contextvars.ContextVar of OpenTelemetry's current Context: a call made while it is "     \
     "not empty goes to the hook's pure-Python twin (None: never looked at)."},                                \
        {"observe", (PyCFunction)(void (*)(void))observe, METH_FASTCALL,                                       \
         "observe(row, value) -> bool: add value to the row's histogram columns; False if it is not a row."}

#define FACTORY_METHOD(name, doc) {#name, (PyCFunction)(void (*)(void))make_##name, METH_VARARGS | METH_KEYWORDS, doc}

/* The module's exec (PEP 489; it may run more than once, with importlib.reload or an import after
 * its sys.modules entry went: whatever is made is kept, never made again over a reference still
 * held): the names interned, ``relies_on`` (NULL-terminated: the library's attribute names the
 * module's C reads) set as its ``RELIES_ON`` tuple, and Hook and ``types`` (NULL-terminated) added. */
static inline int hot_path_exec(PyObject *module, const char *const *relies_on, PyTypeObject *const *types) {
    for (const Name *name = NAMES; name->name != NULL; name++) {
        if (intern_name(name->name, name->text) < 0) {
            return -1;
        }
    }
    /* PyModule_AddType readies a type only once, and names it after the last part of tp_name. */
    if (PyModule_AddType(module, &HookType) < 0) {
        return -1;
    }
    for (PyTypeObject *const *type = types; *type != NULL; type++) {
        if (PyModule_AddType(module, *type) < 0) {
            return -1;
        }
    }
    Py_ssize_t n = 0;
    while (relies_on[n] != NULL) {
        n++;
    }
    PyObject *names = PyTuple_New(n);
    if (names == NULL) {
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *name = PyUnicode_FromString(relies_on[i]);
        if (name == NULL) {
            Py_DECREF(names);
            return -1;
        }
        PyTuple_SET_ITEM(names, i, name);
    }
    int added = PyModule_AddObjectRef(module, "RELIES_ON", names);
    Py_DECREF(names);
    return added;
}

/* The module ``HOOKS_MODULE``, documented by ``doc``: its types ``TYPES(&<Name>Type, ...)``, its
 * functions configure, observe and the rest of the arguments (``FACTORY_METHOD``s), and what it relies
 * on of the library ``RELIES_ON``. No per-module state (multi-phase initialisation needs m_size
 * non-negative), and no Py_mod_gil: the statics and the rows are only safe under the GIL. */
#define TYPES(...) __VA_ARGS__
#define HOOKS_MODULE_INIT(doc, types, ...)                                                             \
    static PyMethodDef hooks_methods[] = {HOT_PATH_METHODS, __VA_ARGS__, {NULL, NULL, 0, NULL}};        \
    static int hooks_exec(PyObject *module) {                                                           \
        PyTypeObject *const all[] = {types, NULL};                                                      \
        return hot_path_exec(module, RELIES_ON, all);                                                   \
    }                                                                                                   \
    static PyModuleDef_Slot hooks_slots[] = {{Py_mod_exec, hooks_exec}, ONE_INTERPRETER_SLOT{0, NULL}}; \
    static struct PyModuleDef hooks_module = {                                                          \
        PyModuleDef_HEAD_INIT, .m_name = HOOKS_MODULE, .m_doc = doc, .m_size = 0,                       \
        .m_methods = hooks_methods, .m_slots = hooks_slots,                                             \
    };                                                                                                  \
    PyMODINIT_FUNC PyInit__hooks(void) { return PyModuleDef_Init(&hooks_module); }

#endif /* OTEL_TRADING_HOT_PATH_H */
