// A fake libnccl for the emulated GPU (see build.sh): communicators over the fake driver's
// devices in one process (ncclCommInitAll), collectives reduced on the host (device pointers
// are host pointers here). The ranks of ncclCommInitRank may live in several processes and
// meet in shared memory instead (fake_nccl_shm.cpp); what follows is about ranks in one.
//
// Stream order: the fake driver runs every piece of work when it is queued, so when a
// collective is called everything queued before it on its stream has run. By default a
// collective therefore waits, at the call, until every rank of its communicator has called
// the same collective (ranks are threads: one per device, or one thread inside
// ncclGroupStart/End calling for all of them), then the last to arrive computes the result
// into every rank's receive buffer and all return: work queued after the call sees the
// result, as on a GPU. A rank that never arrives is given up after
// TAPEGRAD_EMU_NCCL_TIMEOUT_S seconds (default 60; real NCCL waits on the GPU forever, until
// ncclCommAbort, which wakes the fake's waiters too, see below): the call returns ncclRemoteError, its
// part is taken out of the round (a late peer must not write into buffers the caller may
// have freed meanwhile), and the communicator reports the error from then on
// (ncclCommGetAsyncError).
//
// Queued mode (TAPEGRAD_EMU_NCCL_QUEUE=1), as on a GPU: the call returns at once and the
// collective is a fence on the stream (pending.h) that the last rank to arrive signals after
// computing the result; until then the stream's later work, its synchronisation and events
// recorded after it wait (cuEventQuery: not ready). A rank that never arrives leaves the
// stream stuck, with no timeout, until ncclCommAbort, which signals the fences without
// computing anything (the receive buffers keep whatever they held), as a real abort makes
// stuck NCCL kernels return. ncclCommDestroy waits, also without a timeout, until the
// rank's queued collectives are done (real NCCL's does too: only ncclCommAbort does not).
// Ranks whose collectives disagree make every rank of the round report ncclInvalidUsage
// through ncclCommGetAsyncError (the callers had returned already).
//
// ncclCommAbort from another thread while a call on the same communicator is blocked (at the
// call, or in a shared-memory clique) wakes that call, which returns ncclInvalidUsage without
// computing anything, as real NCCL's abort flag makes its blocked host-side waits return;
// the communicator is freed only once that call has left the library (no use after free,
// whichever thread aborts). Calls made after the abort has begun fail the same way.
//
// Under stream capture a collective is refused (CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED
// invalidates the capture, and the call returns ncclInvalidUsage): the fake cannot replay
// a rendezvous inside a graph, and tapegrad never captures one.
//
// What real NCCL checks and the fake checks too: ranks whose collectives disagree (kind,
// count, dtype, op, root) get ncclInvalidUsage (real NCCL would hang or return garbage:
// tapegrad's header exchange must catch that first).
//
// Test hooks: TAPEGRAD_EMU_NCCL_DIE=<device>:<n> makes the n-th collective called on that
// device (counting from 1) never return, as if the rank's process died after its host part
// (tapegrad's header exchange) and before its GPU joined: the other ranks' part waits, and
// the dead rank's later ncclCommAbort (its watchdog's) does nothing.
// TAPEGRAD_EMU_NCCL_UNTRACKED=<device>:<n> makes the caller's next cuEventRecord after the
// n-th collective on that device fail, as when tapegrad's watchdog cannot track a collective
// it has queued.
// TAPEGRAD_EMU_NCCL_FAIL_UNIQUE_ID=1 makes ncclGetUniqueId fail (ncclSystemError), as when
// rank 0 of `Communicator::nccl_from_mpi` cannot make the id.
// TAPEGRAD_EMU_NCCL_TRACE=<file> appends one line per collective call, with the number
// of kernel launches the fake driver has run so far on the caller's device, so a test can
// check that all-reduces were queued between the backward pass's kernels.
#include "capture.h"
#include "fake_nccl.h"
#include "pending.h"
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

// From fake_driver.cpp: the device of the calling thread's current context, the number of
// devices, and the kernel launches run so far on a device.
int emu_current_device();
int emu_device_count();
uint64_t emu_kernel_launches(int device);
// From fake_driver.cpp: the calling thread's next cuEventRecord fails.
void emu_fail_next_event_record();

namespace fake_nccl {
const char* kind_name(int k) { return k == AllReduce ? "ncclAllReduce" : k == Broadcast ? "ncclBroadcast" : "ncclAllGather"; }
size_t elem_size(int dtype) {
    switch (dtype) {
        case Float16: case Bfloat16: return 2;
        case Float32: return 4;
        case Float64: case Int64: return 8;
        default: return 0;
    }
}

double timeout_s() {
    const char* s = getenv("TAPEGRAD_EMU_NCCL_TIMEOUT_S");
    double t = s ? atof(s) : 0;
    return t > 0 ? t : 60;
}

namespace {
// Elements as they are stored (T) and as they are summed (Acc): bf16 and f16 accumulate in
// float, as NCCL's kernels compute them, but here in rank order and rounded once at the end.
struct Bf16 {
    uint16_t bits;
};
float widen(float x) { return x; }
double widen(double x) { return x; }
int64_t widen(int64_t x) { return x; }
float widen(_Float16 x) { return static_cast<float>(x); }
float widen(Bf16 x) {
    uint32_t u = static_cast<uint32_t>(x.bits) << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
template <typename T> T narrow(decltype(widen(T{})) x) { return static_cast<T>(x); }  // f16: to nearest even
template <> Bf16 narrow<Bf16>(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return Bf16{static_cast<uint16_t>((u >> 16) | 0x40)};  // a quiet NaN
    u += 0x7fffu + ((u >> 16) & 1);  // to nearest, ties to even (an overflow carries into infinity)
    return Bf16{static_cast<uint16_t>(u >> 16)};
}

template <typename T> void reduce(const std::vector<Op>& ops, int op) {
    using Acc = decltype(widen(T{}));
    size_t count = ops[0].count;
    std::vector<Acc> acc(count, Acc(0));
    for (auto& o : ops)  // in rank order: the same bits on every rank
        for (size_t i = 0; i < count; ++i) acc[i] += widen(static_cast<const T*>(o.send)[i]);
    if (op == Avg)
        for (auto& x : acc) x /= Acc(ops.size());
    std::vector<T> out(count);
    for (size_t i = 0; i < count; ++i) out[i] = narrow<T>(acc[i]);
    for (auto& o : ops)
        if (o.recv) memcpy(o.recv, out.data(), count * sizeof(T));
}
}  // namespace

bool agree(const std::vector<Op>& ops) {
    const Op& first = ops[0];
    for (auto& o : ops)
        if (o.kind != first.kind || o.count != first.count || o.dtype != first.dtype || o.op != first.op ||
            o.root != first.root) {
            fprintf(stderr, "fake nccl: ranks disagree about a collective (%s of %zu elements vs %s of %zu)\n",
                    kind_name(first.kind), first.count, kind_name(o.kind), o.count);
            return false;
        }
    return true;
}

void execute(const std::vector<Op>& ops) {
    const Op& first = ops[0];
    const size_t n = ops.size(), bytes = first.count * elem_size(first.dtype);
    switch (first.kind) {
        case AllReduce:
            if (first.dtype == Float32) reduce<float>(ops, first.op);
            else if (first.dtype == Float64) reduce<double>(ops, first.op);
            else if (first.dtype == Float16) reduce<_Float16>(ops, first.op);
            else if (first.dtype == Bfloat16) reduce<Bf16>(ops, first.op);
            else reduce<int64_t>(ops, first.op);
            break;
        case Broadcast: {
            std::vector<char> root(bytes);
            memcpy(root.data(), ops[first.root].send, bytes);
            for (auto& o : ops)
                if (o.recv) memcpy(o.recv, root.data(), bytes);
            break;
        }
        case AllGather: {
            std::vector<char> all(bytes * n);
            for (size_t i = 0; i < n; ++i) memcpy(all.data() + bytes * i, ops[i].send, bytes);
            for (auto& o : ops)
                if (o.recv) memcpy(o.recv, all.data(), bytes * n);
            break;
        }
    }
}
}  // namespace fake_nccl

namespace {
using namespace fake_nccl;

struct Clique;
struct Comm {
    std::shared_ptr<Clique> clique;  // ranks in this process (ncclCommInitAll)
    ShmClique* shm = nullptr;        // or ranks in any process (ncclCommInitRank)
    int rank = 0, device = 0;
    uint64_t seq = 0;  // collectives this rank has called
    std::atomic<int> async_error{Success};
    // Calls inside the library on this communicator (ncclCommAbort waits for them to leave
    // before freeing it), and whether an abort has begun.
    std::atomic<int> users{0};
    std::atomic<bool> aborting{false};
    // TAPEGRAD_EMU_NCCL_DIE made this rank "die" inside a call: its process is gone, as far
    // as its peers can tell, so nothing it calls afterwards (its watchdog's ncclCommAbort)
    // reaches them.
    std::atomic<bool> dead{false};
};

// Counts a call inside the library on `c` for as long as it lives.
struct InCall {
    Comm* c;
    explicit InCall(Comm* comm) : c(comm) { c->users++; }
    ~InCall() { c->users--; }
};

// One collective of a clique: each rank's part, as it arrives.
struct Round {
    std::vector<Op> ops;
    std::vector<bool> arrived;
    // Queued mode: the fence on each waiting rank's stream.
    std::vector<std::shared_ptr<EmuFence>> fences;
    int count = 0;
    bool done = false;
    int result = Success;
};

struct Clique {
    int nranks = 0;
    std::mutex mutex;
    std::condition_variable changed;
    std::map<uint64_t, Round> rounds;
    std::vector<Comm*> comms;
    // Queued mode: each rank's collectives not yet done (ncclCommDestroy waits for them).
    std::vector<int> queued;
    bool aborted = false;
};

bool queued_mode() {
    static const bool q = [] {
        const char* s = getenv("TAPEGRAD_EMU_NCCL_QUEUE");
        return s && *s && strcmp(s, "0") != 0;
    }();
    return q;
}

// Runs a round's collective, unless its parts disagree.
int run_round(Round& r) {
    if (!agree(r.ops)) return InvalidUsage;
    execute(r.ops);
    return Success;
}

// Signals a round's fences and forgets them (the ranks' streams go on). Under the clique's lock.
void release_fences(Clique& cl, Round& r) {
    for (int i = 0; i < cl.nranks; ++i)
        if (r.fences[i]) {
            emu_fence_signal(*r.fences[i]);
            r.fences[i].reset();
            cl.queued[i]--;
        }
}

// Runs a round whose every part has arrived. Under the clique's lock.
void complete(Clique& cl, Round& r) {
    r.result = run_round(r);
    r.done = true;
    if (r.result != Success)  // nobody waits at the call in queued mode: report it as NCCL does
        for (Comm* c : cl.comms)
            if (c) c->async_error = r.result;
    release_fences(cl, r);
    cl.changed.notify_all();
}

void trace(const Comm* c, const Op& op) {
    static std::mutex m;
    const char* path = getenv("TAPEGRAD_EMU_NCCL_TRACE");
    if (!path) return;
    std::lock_guard<std::mutex> lock(m);
    if (FILE* f = fopen(path, "a")) {
        fprintf(f, "%s device=%d rank=%d count=%zu kernels=%llu\n", kind_name(op.kind), c->device, c->rank, op.count,
                (unsigned long long)emu_kernel_launches(c->device));
        fclose(f);
    }
}

// A test hook's `<device>:<n>` (from environment variable `var`): whether a call on
// `device` is the n-th there (counting from 1).
struct NthCall {
    int device = -1;
    long n = 0;
    std::atomic<long> calls[64] = {};
    explicit NthCall(const char* var) {
        if (const char* s = getenv(var)) sscanf(s, "%d:%ld", &device, &n);
    }
    bool now(int d) { return d == device && d >= 0 && d < 64 && ++calls[d] == n; }
};

// TAPEGRAD_EMU_NCCL_DIE: the rank dies inside this call.
bool dies_here(int device) {
    static NthCall die("TAPEGRAD_EMU_NCCL_DIE");
    return die.now(device);
}

// TAPEGRAD_EMU_NCCL_UNTRACKED: the event the caller records after this call fails.
bool untracked_here(int device) {
    static NthCall untracked("TAPEGRAD_EMU_NCCL_UNTRACKED");
    return untracked.now(device);
}

struct Call {
    Comm* comm;
    Op op;
    void* stream;
};

// Deposits each call's part in its round and runs rounds that become complete. Blocking
// mode: waits until all of this call's rounds are done (or the timeout passes). Queued
// mode: the parts that wait for peers become fences on their streams, and the call returns.
int submit(const std::vector<Call>& calls) {
    const bool queue = queued_mode();
    // Stream order: what was queued before the collective has run before it starts.
    if (queue)
        for (auto& call : calls) emu_stream_wait(call.stream);
    struct Mine {
        std::shared_ptr<Clique> clique;
        uint64_t seq;
        int rank;
    };
    std::vector<Mine> mine;
    std::vector<std::pair<void*, std::shared_ptr<EmuFence>>> holds;
    for (auto& [c, op, stream] : calls) {
        auto& cl = c->clique;
        std::lock_guard<std::mutex> lock(cl->mutex);
        if (cl->aborted) return InvalidUsage;
        uint64_t seq = c->seq++;
        Round& r = cl->rounds[seq];
        if (r.ops.empty()) {
            r.ops.resize(cl->nranks);
            r.arrived.assign(cl->nranks, false);
            r.fences.resize(cl->nranks);
        }
        r.ops[c->rank] = op;
        r.arrived[c->rank] = true;
        if (++r.count == cl->nranks) {
            complete(*cl, r);
            if (queue) cl->rounds.erase(seq);
        } else if (queue) {
            r.fences[c->rank] = emu_fence_new();
            cl->queued[c->rank]++;
            holds.push_back({stream, r.fences[c->rank]});
        }
        if (!queue) mine.push_back({cl, seq, c->rank});
    }
    // A fence signalled meanwhile (the last peer arrived) holds nothing up.
    for (auto& [stream, fence] : holds) emu_stream_hold(stream, fence);
    if (queue) return Success;
    int result = Success;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s());
    for (auto& [cl, seq, rank] : mine) {
        std::unique_lock<std::mutex> lock(cl->mutex);
        // (ncclCommAbort forgets the rounds.)
        auto done = [&] {
            auto it = cl->rounds.find(seq);
            return cl->aborted || it == cl->rounds.end() || it->second.done;
        };
        cl->changed.wait_until(lock, deadline, done);
        auto it = cl->rounds.find(seq);
        if (cl->aborted || it == cl->rounds.end()) {
            result = InvalidUsage;
            continue;
        }
        Round& r = it->second;
        if (!r.done) {
            fprintf(stderr, "fake nccl: a rank never joined collective #%llu\n", (unsigned long long)seq);
            // This rank's part leaves the round: a late peer must not compute into buffers
            // the caller frees once the call has failed.
            r.ops[rank] = Op{};
            r.arrived[rank] = false;
            if (--r.count == 0) cl->rounds.erase(it);
            result = RemoteError;
            continue;
        }
        if (r.result != Success) result = r.result;
        // The last rank to leave forgets the round.
        if (--r.count == 0) cl->rounds.erase(it);
    }
    return result;
}

int nranks(const Comm* c) { return c->shm ? shm_nranks(c->shm) : c->clique->nranks; }

// Ranks in other processes take part in their collectives one at a time, in call order.
int run_now(const std::vector<Call>& calls) {
    bool shared = false;
    for (auto& call : calls) shared |= call.comm->shm != nullptr;
    if (!shared) return submit(calls);
    int result = Success;
    for (auto& [c, op, stream] : calls) {
        if (!c->shm) return InvalidUsage;  // one group mixing both kinds of clique
        if (queued_mode()) emu_stream_wait(stream);
        if (int r = shm_collective(c->shm, op); r != Success) result = r;
    }
    return result;
}

thread_local int group_depth = 0;
thread_local std::vector<Call> group_calls;

int enqueue(Comm* c, Op op, void* stream) {
    if (!c) return InvalidArgument;
    InCall in_call(c);
    if (c->aborting) return InvalidUsage;
    if (elem_size(op.dtype) == 0) return InvalidArgument;
    if (op.kind == AllReduce && op.op != Sum && op.op != Avg) return InvalidArgument;
    if (op.root < 0 || op.root >= nranks(c)) return InvalidArgument;
    if (op.count > 0 && (!op.send || !op.recv)) return InvalidArgument;
    if (emu_records(stream)) {
        emu_uncapturable("an NCCL collective (the fake libnccl cannot replay one)");
        return InvalidUsage;
    }
    if (int e = c->async_error.load()) return e;
    if (dies_here(c->device)) {
        fprintf(stderr, "fake nccl: TAPEGRAD_EMU_NCCL_DIE: the rank on device %d dies in %s\n", c->device,
                kind_name(op.kind));
        c->dead = true;
        for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
    }
    trace(c, op);
    const bool untracked = untracked_here(c->device);
    if (group_depth > 0) {
        group_calls.push_back({c, op, stream});
        if (untracked) emu_fail_next_event_record();
        return Success;
    }
    int r = run_now({{c, op, stream}});
    if (r != Success) c->async_error = r;
    else if (untracked) emu_fail_next_event_record();
    return r;
}

std::atomic<uint64_t> next_id{1};

// Forgets a rank that is destroyed or aborted (its clique may outlive it).
void leave(Comm* c) {
    for (auto& x : c->clique->comms)
        if (x == c) x = nullptr;
}
}  // namespace

#pragma GCC visibility push(default)
extern "C" {
typedef struct { char internal[128]; } ncclUniqueId;

int ncclGetVersion(int* v) { *v = 23000; return Success; }
const char* ncclGetErrorString(int r) { return r == Success ? "no error" : "fake nccl error"; }
const char* ncclGetLastError(void*) { return "fake nccl"; }
int ncclGetUniqueId(ncclUniqueId* id) {
    if (const char* fail = getenv("TAPEGRAD_EMU_NCCL_FAIL_UNIQUE_ID"); fail && strcmp(fail, "1") == 0) return SystemError;
    memset(id->internal, 0, sizeof(id->internal));
    // Unique across processes: the ranks of one id may live in several (fake_nccl_shm.cpp).
    snprintf(id->internal, sizeof(id->internal), "fake-nccl-%ld-%llu", (long)getpid(), (unsigned long long)next_id++);
    return Success;
}

int ncclCommInitAll(Comm** comms, int ndev, const int* devlist) {
    if (!comms || ndev <= 0) return InvalidArgument;
    auto cl = std::make_shared<Clique>();
    cl->nranks = ndev;
    cl->queued.assign(ndev, 0);
    for (int i = 0; i < ndev; ++i) {
        int d = devlist ? devlist[i] : i;
        if (d < 0 || d >= emu_device_count()) return InvalidArgument;
        for (int j = 0; j < i; ++j)
            if ((devlist ? devlist[j] : j) == d) return InvalidUsage;  // one rank per device
    }
    for (int i = 0; i < ndev; ++i) {
        comms[i] = new Comm;
        comms[i]->clique = cl;
        comms[i]->rank = i;
        comms[i]->device = devlist ? devlist[i] : i;
        cl->comms.push_back(comms[i]);
    }
    return Success;
}

// Ranks of one id join one clique, whichever processes they are in; the call returns once
// all have joined (as NCCL's does).
int ncclCommInitRank(Comm** comm, int nranks, ncclUniqueId id, int rank) {
    if (!comm || nranks <= 0 || rank < 0 || rank >= nranks) return InvalidArgument;
    ShmClique* shm = nullptr;
    if (int r = shm_join(id.internal, nranks, rank, &shm); r != Success) return r;
    Comm* c = new Comm;
    c->shm = shm;
    c->rank = rank;
    c->device = emu_current_device();
    *comm = c;
    return Success;
}

// Waits (queued mode: without a timeout) until the rank's queued collectives are done.
int ncclCommDestroy(Comm* c) {
    if (!c) return InvalidArgument;
    if (c->shm) {  // its collectives were done when their calls returned
        shm_leave(c->shm);
        delete c;
        return Success;
    }
    {
        std::unique_lock<std::mutex> lock(c->clique->mutex);
        c->clique->changed.wait(lock, [&] { return c->clique->aborted || c->clique->queued[c->rank] == 0; });
        leave(c);
    }
    delete c;
    return Success;
}
// Ends the clique's collectives: waiters at the call return, queued ones are signalled
// without computing anything (their streams go on, their receive buffers are garbage).
int ncclCommAbort(Comm* c) {
    if (!c || c->dead) return Success;  // a dead rank's abort reaches nobody (and it never leaves its call)
    c->aborting = true;
    // A call blocked on another thread is woken below; the communicator goes once it has left.
    auto wait_for_callers = [c] {
        while (c->users.load() > 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    };
    if (c->shm) {
        shm_abort(c->shm);
        wait_for_callers();
        shm_leave(c->shm);
        delete c;
        return Success;
    }
    {
        std::lock_guard<std::mutex> lock(c->clique->mutex);
        Clique& cl = *c->clique;
        cl.aborted = true;
        for (auto& [_, r] : cl.rounds) release_fences(cl, r);
        cl.rounds.clear();
        leave(c);
        cl.changed.notify_all();
    }
    wait_for_callers();
    delete c;
    return Success;
}
int ncclCommGetAsyncError(Comm* c, int* e) { if (!c || !e) return InvalidArgument; *e = c->async_error.load(); return Success; }
int ncclCommCount(const Comm* c, int* n) { *n = nranks(c); return Success; }
int ncclCommCuDevice(const Comm* c, int* d) { *d = c->device; return Success; }
int ncclCommUserRank(const Comm* c, int* r) { *r = c->rank; return Success; }

int ncclAllReduce(const void* send, void* recv, size_t count, int dtype, int op, Comm* c, void* stream) {
    return enqueue(c, Op{AllReduce, dtype, op, 0, count, send, recv}, stream);
}
int ncclBroadcast(const void* send, void* recv, size_t count, int dtype, int root, Comm* c, void* stream) {
    return enqueue(c, Op{Broadcast, dtype, 0, root, count, send, recv}, stream);
}
int ncclAllGather(const void* send, void* recv, size_t count, int dtype, Comm* c, void* stream) {
    return enqueue(c, Op{AllGather, dtype, 0, 0, count, send, recv}, stream);
}
int ncclGroupStart() { ++group_depth; return Success; }
int ncclGroupEnd() {
    if (group_depth == 0) return InvalidUsage;
    if (--group_depth > 0) return Success;
    auto calls = std::move(group_calls);
    group_calls.clear();
    if (calls.empty()) return Success;
    std::vector<std::unique_ptr<InCall>> in_calls;  // the group's communicators are in use until it ends
    for (auto& call : calls) {
        in_calls.push_back(std::make_unique<InCall>(call.comm));
        if (call.comm->aborting) return InvalidUsage;
    }
    int r = run_now(calls);
    if (r != Success)
        for (auto& call : calls) call.comm->async_error = r;
    return r;
}
}
#pragma GCC visibility pop
