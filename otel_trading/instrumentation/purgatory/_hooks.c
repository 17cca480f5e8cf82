/* purgatory's compiled hot paths: ``SyncCircuitBreaker.__enter__`` (``paired_enter``, also the body
 * of the async wrapper's ``__aenter__``) and ``SyncCircuitBreaker.__exit__`` (``paired_exit``), and
 * ``OpenBlocks``, where an entered block's start waits for its exit. Their pure-Python twins are
 * ``__enter__`` and ``__exit__`` in ``purgatory/hooks.py`` (``PurgatoryBreakers._enter``/``_exit``).
 *
 * What they rely on of purgatory (module tuple ``RELIES_ON``):
 *   wrapper.context     the circuit's Context a breaker wrapper guards its block with
 *   context.__enter__   entering it (``OpenedState`` raised there is a rejection)
 *   context.name        the circuit's name, the key of the circuits table
 *
 * What ``paired_exit`` reads of otel-trading's objects, at slot offsets checked by the factory:
 *   circuit_type (_Circuit)  local (its rows' threading.local, whose ``row`` is the thread's row), hot
 *   series_type (Series)     fast
 */
#define HOOKS_MODULE "otel_trading.instrumentation.purgatory._hooks"
#define HOOK_NAMES(X) X(context) X(name)
#include "hot_path.h"

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
    TYPE_HEAD(OpenBlocks, "The starts of the guarded blocks entered and not yet left (purgatory's wrappers)."),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = open_blocks_new,
    .tp_dealloc = open_blocks_dealloc,
    .tp_traverse = open_blocks_traverse,
    .tp_clear = open_blocks_clear,
    .tp_methods = open_blocks_methods,
};

/* -- paired_enter: purgatory's ``SyncCircuitBreaker.__enter__(self)`` ------------------------------
 * Enters ``self.context``; its ``opened`` error is a rejection (``rejected(self)``); then the
 * start is kept in ``blocks`` (or, when full, under the wrapper's id in ``starts``, with
 * ``nested(key, start)`` when the wrapper is already in a block). It records no duration, so it
 * stays compiled whatever OpenTelemetry's context holds: paired_exit decides for the block. */
typedef struct {
    Hook hook;
    PyObject *starts;   /* id(wrapper) -> start, when ``blocks`` is full */
    PyObject *opened;   /* the rejection exception class */
    PyObject *rejected; /* the twin's ``rejected(wrapper)`` */
    PyObject *nested;   /* the twin's ``nested(key, start)`` */
    PyObject *blocks;   /* the OpenBlocks, where most starts wait */
} PairedEnter;

HOOK_KIND(PairedEnter, paired_enter, NULL, "purgatory's SyncCircuitBreaker.__enter__, compiled.",
          ARG_OF(PairedEnter, starts, &PyDict_Type), ARG(PairedEnter, opened, AN_EXCEPTION),
          ARG(PairedEnter, rejected, CALLABLE), ARG(PairedEnter, nested, CALLABLE),
          ARG_OF(PairedEnter, blocks, &OpenBlocksType))

static PyObject *paired_enter(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    PairedEnter *h = HOOK_CALLED(PairedEnter);
    if (PyVectorcall_NARGS(nargsf) != 1 || kwnames != NULL) {
        return SLOW(h);
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
        if (PyErr_ExceptionMatches(h->opened)) {
            bookkeep(h->rejected, &self, 1);
        }
        return NULL;
    }
    double began = now();
    if (open_push((OpenBlocks *)h->blocks, self, began) == 0) {
        return entered;
    }
    PyObject *start = PyFloat_FromDouble(began);
    PyObject *key = start != NULL ? id_key(self) : NULL;
    if (key == NULL) {
        Py_XDECREF(start);
        PyErr_Clear();
        return entered;
    }
    PyObject *kept = PyDict_SetDefault(h->starts, key, start); /* borrowed */
    if (kept == NULL) {
        PyErr_Clear();
    } else if (kept != start) {
        PyObject *nested_args[2] = {key, start};
        bookkeep(h->nested, nested_args, 2);
    }
    Py_DECREF(key);
    Py_DECREF(start);
    return entered;
}

/* -- paired_exit: purgatory's ``SyncCircuitBreaker.__exit__(self, exc_type, exc, tb)`` --------------
 * Fast path: no exception, OpenTelemetry's context empty, one start kept for the wrapper, a known
 * circuit whose series is hot and whose row in this thread exists: the library's exit runs, then the
 * block (enter to this call) is one histogram update. The exit alone decides: paired_enter records
 * no duration and keeps every start in ``blocks`` whatever the context (the twin exit takes it from
 * there as this one does, so a block entered here and left there, or the reverse, keeps its start). */

/* The circuit the last exit found for a context object, and the size of the circuits table then:
 * circuits are only ever added, never replaced, so while the size is unchanged (no circuit added,
 * none removed by uninstrument) the same context object (held, so no other object takes its
 * address) leads to the same circuit. None found yet (or the hook cleared): ``circuit`` is NULL. */
typedef struct {
    PyObject *context; /* strong */
    PyObject *circuit; /* strong */
    Py_ssize_t size;
} LastCircuit;

typedef struct {
    Hook hook;
    PyObject *orig;     /* the library's own ``__exit__`` */
    PyObject *starts;   /* id(wrapper) -> start, when ``blocks`` was full */
    PyObject *circuits; /* circuit name -> circuit */
    PyObject *record;   /* the twin's ``record(circuit, elapsed)``, for a row it could not update */
    PyObject *blocks;   /* the OpenBlocks */
    EntryLayout circuit;
    SeriesLayout series;
    LastCircuit last;
} PairedExit;

HOOK_KIND(PairedExit, paired_exit, NULL, "purgatory's SyncCircuitBreaker.__exit__, compiled.",
          ARG(PairedExit, orig, CALLABLE), ARG_OF(PairedExit, starts, &PyDict_Type),
          ARG_OF(PairedExit, circuits, &PyDict_Type), ARG(PairedExit, record, CALLABLE),
          ARG_OF(PairedExit, blocks, &OpenBlocksType), CLASS_ARG(PairedExit, circuit, local, hot),
          SERIES_ARG(PairedExit), OWNS(PairedExit, last.context), OWNS(PairedExit, last.circuit))

static PyObject *paired_exit(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    PairedExit *h = HOOK_CALLED(PairedExit);
    double end = now();
    if (PyVectorcall_NARGS(nargsf) != 4 || kwnames != NULL || args[2] != Py_None || context_held()) {
        return SLOW(h);
    }
    PyObject *self = args[0];
    double began;
    PyObject *key = NULL; /* set when the start is in the dict */
    OpenBlocks *blocks = (OpenBlocks *)h->blocks;
    int open = open_find(blocks, self);
    if (open >= 0) {
        began = blocks->starts[open];
    } else {
        key = id_key(self);
        if (key == NULL) {
            return NULL;
        }
        PyObject *start = PyDict_GetItemWithError(h->starts, key); /* borrowed */
        if (start == NULL || !PyFloat_CheckExact(start)) {
            Py_DECREF(key);
            PyErr_Clear();
            return SLOW(h);
        }
        began = PyFloat_AS_DOUBLE(start);
    }
    PyObject *context = PyObject_GetAttr(self, S_context);
    PyObject *circuit = NULL; /* owned: what follows may run Python code */
    if (context != NULL && h->last.context == context && h->last.circuit != NULL &&
        PyDict_GET_SIZE(h->circuits) == h->last.size) {
        /* The circuit the last exit found for this very context: purgatory's in-memory repository
         * keeps one context per circuit, and a context's name is set once, when it is made. */
        circuit = Py_NewRef(h->last.circuit);
    } else if (context != NULL) {
        PyObject *name = PyObject_GetAttr(context, S_name);
        circuit = name != NULL ? Py_XNewRef(PyDict_GetItemWithError(h->circuits, name)) : NULL;
        Py_XDECREF(name);
        if (circuit != NULL) {
            Py_XSETREF(h->last.context, Py_NewRef(context));
            Py_XSETREF(h->last.circuit, Py_NewRef(circuit));
            h->last.size = PyDict_GET_SIZE(h->circuits);
        }
    }
    Py_XDECREF(context);
    PyObject *local = circuit != NULL ? hot_local(&h->circuit, &h->series, circuit) : NULL;
    PyObject *row = local != NULL ? thread_row(&h->hook.rows, local) : NULL;
    Py_XDECREF(local);
    if (row == NULL) {
        Py_XDECREF(circuit);
        Py_XDECREF(key);
        PyErr_Clear();
        return SLOW(h);
    }
    /* The block is over whatever follows (the twin reads and forgets its start first too). Found
     * again: the lookups above may have run Python code that entered or left other blocks. */
    if (key == NULL) {
        open = open_find(blocks, self);
        if (open >= 0) {
            open_remove(blocks, open);
        }
    } else {
        if (PyDict_DelItem(h->starts, key) < 0) {
            PyErr_Clear();
        }
        Py_DECREF(key);
    }
    PyObject *result = PyObject_Vectorcall(h->orig, args, 4, NULL); /* the library's own */
    /* Recorded however the library's exit ended, as the Python twin's ``finally`` does. */
    if (result != NULL) {
        record_success(row, circuit, h->record, end - began);
    } else {
        Pending error = pending_take();
        record_success(row, circuit, h->record, end - began);
        pending_restore(error);
    }
    Py_DECREF(row);
    Py_DECREF(circuit);
    return result;
}

/* -- the module ------------------------------------------------------------------------------------ */
/* The library's attribute names its C reads (listed at the top), its ``RELIES_ON``. */
static const char *const RELIES_ON[] = {"context", "__enter__", "name", NULL};

HOOKS_MODULE_INIT("purgatory's compiled hot paths (SyncCircuitBreaker.__enter__ and __exit__).",
                  TYPES(&OpenBlocksType, &PairedEnterType, &PairedExitType),
                  FACTORY_METHOD(paired_enter, "paired_enter(*, slow, starts, opened, rejected, nested, blocks): "
                                               "purgatory's SyncCircuitBreaker.__enter__."),
                  FACTORY_METHOD(paired_exit, "paired_exit(*, slow, orig, starts, circuits, record, blocks, "
                                              "circuit_type, series_type): purgatory's SyncCircuitBreaker.__exit__."))
