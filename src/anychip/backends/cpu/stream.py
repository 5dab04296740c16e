"""The `cpu` device's stream: a jit replay's launches run as one C call on a worker thread
of their own, while Python goes on (as CUDA streams let a GPU's kernels run behind the
host code that queues them).

A replay of `anychip.jit` (runtime/replay.py) is a fixed list of kernel calls whose
arguments change only in their buffer addresses. `Sequence` generates a C function
calling those kernels in order from one argument array (cached on disk by the cpu
compiler like any kernel: its source depends only on the kernels' signatures), and
`Sequence.start` hands it to the stream's worker, a POSIX thread in C that never holds
the GIL. The call returns at once; the kernels then run beside the Python that follows
(handing back the step's tensors, building the next call's signature).

Ordering: each thread that replays has a stream of its own (threads' kernels run at
once, as they do eagerly), with one sequence in flight at a time. The buffers a sequence
uses are kept alive until it has finished (their memory, not the Buffer objects, so a
replay's donation checks count references as before), and each remembers the stream that
last used it: every launch, copy in or out, host view or host address of the cpu backend
first waits for the streams of the buffers it touches (`wait_for`; a new buffer waits for
nothing), a replay for the sequence of its own last replay, and
`CpuBackend.synchronize` for every stream. A fork waits first, and the child starts its
streams anew.

Ctrl-C: a sequence is never stopped half way, but waiting for one returns to Python every
50 ms, so KeyboardInterrupt is raised there within that time while the sequence runs on
to its end (and the next use of the memory waits for it).

`ANYCHIP_CPU_ASYNC=0` turns sequences off: replays call their kernels one by one, in the
calling thread, as do replays where there is no C compiler or the worker cannot start.
"""

from __future__ import annotations

import atexit
import collections
import ctypes
import os
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from anychip.backends.cpu.memory import Memory

_SOURCE = r"""
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

typedef void (*anychip_seq_fn)(const uint64_t *args, void *const *fns);

/* Sequences run in the order handed over; up to QUEUE wait or run at once, so a caller
   queues the next one (an optimizer's update after a backward pass) without waiting for
   the one before. */
#define QUEUE 2

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t go, done;
    anychip_seq_fn fn[QUEUE];
    const uint64_t *args[QUEUE];
    void *const *fns[QUEUE];
    int64_t submitted, finished; /* counts (atomic); only the worker writes `finished` */
} anychip_stream;

/* A thread waking from a condition variable takes tens of microseconds, as long as a
   small training step's kernels: both sides first poll the counts for a while. */
#define SPIN_NS 200000

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static void relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Sequences handed over and not finished. */
static int64_t pending(anychip_stream *s) {
    return __atomic_load_n(&s->submitted, __ATOMIC_ACQUIRE) -
           __atomic_load_n(&s->finished, __ATOMIC_ACQUIRE);
}

/* Poll until pending(s) is within [lo, hi] or SPIN_NS pass; whether it was. */
static int spin_for(anychip_stream *s, int64_t lo, int64_t hi) {
    int64_t end = now_ns() + SPIN_NS;
    for (int i = 0;; i++) {
        int64_t n = pending(s);
        if (n >= lo && n <= hi) return 1;
        relax();
        if ((i & 63) == 63 && now_ns() > end) return 0;
    }
}

static void *anychip_stream_worker(void *p) {
    anychip_stream *s = p;
    for (;;) {
        if (!spin_for(s, 1, QUEUE)) {
            pthread_mutex_lock(&s->lock);
            while (pending(s) == 0) pthread_cond_wait(&s->go, &s->lock);
            pthread_mutex_unlock(&s->lock);
        }
        int64_t k = __atomic_load_n(&s->finished, __ATOMIC_ACQUIRE);
        int i = (int)(k % QUEUE);
        s->fn[i](s->args[i], s->fns[i]);
        pthread_mutex_lock(&s->lock);
        __atomic_store_n(&s->finished, k + 1, __ATOMIC_RELEASE);
        pthread_cond_broadcast(&s->done);
        pthread_mutex_unlock(&s->lock);
    }
    return NULL;
}

/* A stream with its worker thread (detached: it ends with the process), or NULL. */
anychip_stream *anychip_stream_new(void) {
    anychip_stream *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->go, NULL);
    pthread_cond_init(&s->done, NULL);
    pthread_t t;
    if (pthread_create(&t, NULL, anychip_stream_worker, s) != 0) {
        free(s);
        return NULL;
    }
    pthread_detach(t);
    return s;
}

/* Wait until at most `most` sequences are pending or `ns` nanoseconds pass: whether they
   are. */
static int wait_pending(anychip_stream *s, int64_t most, int64_t ns) {
    if (spin_for(s, 0, most)) return 1;
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    int64_t end = t.tv_nsec + ns;
    t.tv_sec += end / 1000000000;
    t.tv_nsec = end % 1000000000;
    pthread_mutex_lock(&s->lock);
    while (pending(s) > most)
        if (pthread_cond_timedwait(&s->done, &s->lock, &t) == ETIMEDOUT) break;
    int ok = pending(s) <= most;
    pthread_mutex_unlock(&s->lock);
    return ok;
}

/* Wait until the stream is idle or `ns` nanoseconds pass: whether it is idle. */
int anychip_stream_wait_for(anychip_stream *s, int64_t ns) { return wait_pending(s, 0, ns); }

/* Wait until another sequence can be queued or `ns` nanoseconds pass: whether it can. */
int anychip_stream_wait_room(anychip_stream *s, int64_t ns) {
    return wait_pending(s, QUEUE - 1, ns);
}

/* Sequences finished so far. */
int64_t anychip_stream_finished(anychip_stream *s) {
    return __atomic_load_n(&s->finished, __ATOMIC_ACQUIRE);
}

/* Queue `fn(args, fns)` (the caller made room: wait_room); returns at once. */
void anychip_stream_submit(anychip_stream *s, anychip_seq_fn fn, const uint64_t *args,
                           void *const *fns) {
    pthread_mutex_lock(&s->lock);
    int64_t k = __atomic_load_n(&s->submitted, __ATOMIC_ACQUIRE);
    int i = (int)(k % QUEUE);
    s->fn[i] = fn;
    s->args[i] = args;
    s->fns[i] = fns;
    __atomic_store_n(&s->submitted, k + 1, __ATOMIC_RELEASE);
    pthread_cond_signal(&s->go);
    pthread_mutex_unlock(&s->lock);
}

/* Run `fn(args, fns)` here, for a synchronous stream. */
void anychip_stream_run(anychip_seq_fn fn, const uint64_t *args, void *const *fns) {
    fn(args, fns);
}
"""

# C spelling of each ctypes argument type a kernel takes, and how its value is read from
# the sequence's argument array (one 64-bit word per argument)
_C_TYPES: dict[Any, tuple[str, str]] = {
    ctypes.c_void_p: ("void*", "(void *)a[{i}]"),
    ctypes.c_float: ("float", "f32(a + {i})"),
    ctypes.c_double: ("double", "f64(a + {i})"),
    ctypes.c_int32: ("int32_t", "(int32_t)a[{i}]"),
    ctypes.c_int64: ("int64_t", "(int64_t)a[{i}]"),
}

_HEADER = r"""#include <stdint.h>
#include <string.h>
static inline float f32(const uint64_t *p) { float v; memcpy(&v, p, 4); return v; }
static inline double f64(const uint64_t *p) { double v; memcpy(&v, p, 8); return v; }
"""


def enabled() -> bool:
    """Whether sequences run on the worker thread (ANYCHIP_CPU_ASYNC, default 1)."""
    return os.environ.get("ANYCHIP_CPU_ASYNC", "1").strip() not in ("0", "false", "no", "off")


class _Lib:
    """The stream routines, built once per machine (None where they cannot be)."""

    lock = threading.Lock()
    lib: Any = None
    tried = False

    @classmethod
    def get(cls) -> Any:
        if not cls.tried:
            with cls.lock:
                if not cls.tried:
                    cls.lib = cls._build()
                    cls.tried = True
        return cls.lib

    @staticmethod
    def _build() -> Any:
        from anychip.backends.cpu import compiler

        try:
            lib = compiler.build(_SOURCE, ["-O2", "-pthread"], "anychip_stream")
        except Exception:  # no usable compiler or cache: replays call kernel by kernel
            return None
        lib.anychip_stream_new.restype = ctypes.c_void_p
        lib.anychip_stream_new.argtypes = []
        lib.anychip_stream_wait_for.restype = ctypes.c_int
        lib.anychip_stream_wait_for.argtypes = [ctypes.c_void_p, ctypes.c_int64]
        lib.anychip_stream_wait_room.restype = ctypes.c_int
        lib.anychip_stream_wait_room.argtypes = [ctypes.c_void_p, ctypes.c_int64]
        lib.anychip_stream_finished.restype = ctypes.c_int64
        lib.anychip_stream_finished.argtypes = [ctypes.c_void_p]
        lib.anychip_stream_submit.restype = None
        lib.anychip_stream_submit.argtypes = [ctypes.c_void_p] * 4
        lib.anychip_stream_run.restype = None
        lib.anychip_stream_run.argtypes = [ctypes.c_void_p] * 3
        return lib


QUEUE = 2  # sequences a stream holds at once (the C side's QUEUE)


class Stream:
    """A cpu stream: sequences run in the order started, up to QUEUE handed over at once
    (`busy` holds what each uses, oldest first, so it stays alive until the sequence is
    seen finished)."""

    def __init__(self) -> None:
        # reentrant: a finaliser run by the garbage collector inside `start` may wait
        self.lock = threading.RLock()
        self.handle: int | None = None
        self.busy: collections.deque[tuple[int, tuple[Any, ...]]] | None = None
        self.tickets = 0  # sequences handed over; the k-th is done once `finished` >= k

    def start(self, fn: int, args: np.ndarray, fns: np.ndarray, keep: list[Any]) -> None:
        """Run the sequence function at address `fn` on `args` and `fns` (kernel
        addresses), on the worker when there is one, else here; `keep` stays alive until
        it has run, and its memory handles remember this stream (`wait_for`)."""
        lib = _Lib.get()
        for h in keep:
            if type(h) is Memory:
                was = h.stream
                if was is not self and was is not None and was.busy is not None:
                    was.wait()  # another thread's sequence uses it too: it goes first
                h.stream = self
        with self.lock:
            if self.handle is None:
                self.handle = lib.anychip_stream_new()
            if not self.handle:  # no worker: run here, in order
                if self.busy is not None:
                    self._idle(lib)
                self.busy = None
                lib.anychip_stream_run(fn, args.ctypes.data, fns.ctypes.data)
                return
            done = self._reap(lib)
            if self.busy is not None and len(self.busy) >= QUEUE:
                while not lib.anychip_stream_wait_room(self.handle, 50_000_000):
                    pass  # back in Python every 50 ms: Ctrl-C raises here
                done += self._reap(lib)
            self.tickets += 1
            if self.busy is None:
                self.busy = collections.deque()
            self.busy.append((self.tickets, (args, fns, keep)))
            lib.anychip_stream_submit(self.handle, fn, args.ctypes.data, fns.ctypes.data)
        del done  # finished sequences' buffers go back outside the lock (their __del__)

    def _reap(self, lib: Any) -> list[Any]:
        """What the sequences seen finished held (for the caller to drop outside the
        lock); `busy` keeps the others."""
        busy = self.busy
        if busy is None:
            return []
        finished = lib.anychip_stream_finished(self.handle)
        done = []
        while busy and busy[0][0] <= finished:
            done.append(busy.popleft())
        if not busy:
            self.busy = None
        return done

    def wait(self) -> None:
        """Return once no sequence is in flight."""
        if self.busy is None:  # the common case: nothing queued, no lock taken
            return
        with self.lock:  # `busy` is cleared only once its sequences have run
            if self.busy is not None:
                self._idle(_Lib.get())
            done, self.busy = self.busy, None
        del done

    def _idle(self, lib: Any) -> None:
        """Block until the worker is idle, back in Python every 50 ms: Ctrl-C raises
        KeyboardInterrupt here while the sequences run on to their end (`busy` stays set,
        so the next use of the memory waits for them)."""
        while not lib.anychip_stream_wait_for(self.handle, 50_000_000):
            pass

    def _after_fork(self) -> None:  # the child has no worker thread: it starts its own
        self.lock = threading.RLock()
        self.handle = None
        self.busy = None
        self.tickets = 0


# Each thread that starts sequences has a stream of its own, so threads' jit replays run
# their kernels at once; a thread that ends gives its stream back for the next one.
_ALL: list[Stream] = []  # every stream made (few: one per thread replaying at once)
_FREE: list[Stream] = []
_POOL_LOCK = threading.Lock()
_MINE = threading.local()  # .lease: this thread's _Lease


class _Lease:
    """A thread's hold on its stream, dropped with the thread's locals when it ends."""

    __slots__ = ("stream",)

    def __init__(self, stream: Stream) -> None:
        self.stream = stream

    def __del__(self, free: list[Stream] = _FREE) -> None:  # bound early: safe at exit
        free.append(self.stream)  # one atomic append: safe wherever the finaliser runs


def mine() -> Stream:
    """This thread's stream."""
    lease = getattr(_MINE, "lease", None)
    if lease is None:
        with _POOL_LOCK:
            s = _FREE.pop() if _FREE else None
            if s is None:
                s = Stream()
                _ALL.append(s)
        lease = _MINE.lease = _Lease(s)
    return lease.stream  # type: ignore[no-any-return]


def wait_all() -> None:
    """Return once no stream has a sequence in flight (`CpuBackend.synchronize`)."""
    for s in _ALL:  # appended to only: iterating while another thread appends is safe
        if s.busy is not None:
            s.wait()


def wait_for(handle: Any) -> None:
    """Before a use of `handle`'s memory: wait for the stream whose sequence last used it.
    A sequence that uses a buffer another stream's sequence in flight uses starts after it
    (`Stream.start`), so the last one is the one to wait for; a new buffer waits for none."""
    s = handle.stream
    if s is not None and s.busy is not None:
        s.wait()


def _after_fork() -> None:  # the child has no worker threads: its streams start anew
    for s in _ALL:
        s._after_fork()


atexit.register(wait_all)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=wait_all, after_in_child=_after_fork)


class Sequence:
    """Direct kernel calls (ctypes functions with their argument types) as one generated
    C function reading every argument from one array of 64-bit words: `layout(values)`
    packs the calls' arguments, `start(args, keep)` runs them on the stream."""

    def __init__(self, fns: list[Callable[..., None]]) -> None:
        from anychip.backends.cpu import compiler

        self.offsets: list[int] = []  # each call's first word in the argument array
        lines, at = [], 0
        for k, fn in enumerate(fns):
            types = [_C_TYPES[t] for t in fn.argtypes]  # type: ignore[attr-defined]
            params = ", ".join(c for c, _ in types)
            args = ", ".join(read.format(i=at + i) for i, (_, read) in enumerate(types))
            lines.append(f"    ((void (*)({params}))f[{k}])({args});")
            self.offsets.append(at)
            at += len(types)
        self.words = at
        self.types = [t for fn in fns for t in fn.argtypes]  # type: ignore[attr-defined]
        source = _HEADER + (
            "void anychip_sequence(const uint64_t *a, void *const *f) {\n"
            + "\n".join(lines)
            + "\n}\n"
        )
        self.lib = compiler.build(source, ["-O1"], f"anychip_sequence({len(fns)} calls)")
        self.fn = ctypes.cast(self.lib.anychip_sequence, ctypes.c_void_p).value
        addresses = [ctypes.cast(f, ctypes.c_void_p).value for f in fns]  # type: ignore[arg-type]
        self.fns = np.array(addresses, np.uint64)
        self.kernels = fns  # their libraries stay loaded while the sequence lives

    def layout(self, values: list[Any]) -> np.ndarray:
        """The argument array of the flat argument `values` (None: filled per run)."""
        out = np.zeros(self.words, np.uint64)
        for i, (t, v) in enumerate(zip(self.types, values, strict=True)):
            if v is None:
                continue
            if t is ctypes.c_float:
                out[i] = int(np.array(v, np.float32).view(np.uint32))
            elif t is ctypes.c_double:
                out[i] = int(np.array(v, np.float64).view(np.uint64))
            else:  # addresses and integers, two's complement in 64 bits
                out[i] = int(v) & 0xFFFFFFFFFFFFFFFF
        return out

    def start(self, args: np.ndarray, keep: list[Any]) -> Stream:
        """Run on this thread's stream; the stream (its `wait`) for the caller to wait."""
        stream = mine()
        stream.start(self.fn, args, self.fns, keep)  # type: ignore[arg-type]
        return stream


def sequence(fns: list[Callable[..., None]]) -> Sequence | None:
    """A Sequence of `fns`, or None where the stream routines or the build are missing."""
    types = [getattr(f, "argtypes", None) for f in fns]
    if (
        not enabled()
        or _Lib.get() is None
        or any(t is None or not set(t) <= _C_TYPES.keys() for t in types)
    ):
        return None
    try:
        return Sequence(fns)
    except Exception:  # the compiler refused: the replay calls kernel by kernel
        return None
