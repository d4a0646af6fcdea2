// Cliques across processes for the fake libnccl: the ranks of ncclCommInitRank, which real
// NCCL lets live in different processes (tapegrad's Communicator::nccl_from_mpi: one process
// per GPU, started by mpirun, rank 0's id broadcast over MPI). Each process has its own
// emulated GPUs, whose memory is host memory, so the ranks meet in POSIX shared memory:
//
// - the clique: a segment named after the id, holding a process-shared (robust) mutex and
//   condition variable and, per rank, how many collectives it has posted and finished;
//   the last rank to join unlinks its name (the mappings stay), so nothing is left behind;
// - each collective: every rank copies its send buffer into a segment of its own, posts
//   the collective's description, waits until every rank has posted, computes its own
//   result from the peers' segments (in rank order, as the in-process clique does: the
//   same bits on every rank), then waits until every rank has finished reading before
//   unlinking its segment.
//
// A collective blocks its caller until it is done (stream order holds: the fake driver ran
// the stream's earlier work when it was queued); queued mode (TAPEGRAD_EMU_NCCL_QUEUE) is
// for ranks in one process only. A rank that does not post within the timeout takes its
// part back and fails with ncclRemoteError; ncclCommAbort in any process wakes and fails
// every waiting rank.
#include "fake_nccl.h"
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <pthread.h>
#include <string>
#include <sys/mman.h>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>

namespace fake_nccl {
namespace {
constexpr int kMaxRanks = 64;

struct Posted {
    int kind, dtype, op, root;
    size_t count;
};

struct Header {
    std::atomic<int> ready;  // the creator has initialised what follows
    pthread_mutex_t mutex;
    pthread_cond_t changed;
    int nranks;
    int joined;
    int aborted;
    bool member[kMaxRanks];
    uint64_t arrived[kMaxRanks];  // collectives each rank has posted
    uint64_t left[kMaxRanks];     // collectives each rank has finished reading
    Posted posted[kMaxRanks];     // each rank's latest posted collective
};

struct Lock {
    Header* h;
    explicit Lock(Header* header) : h(header) {
        // A peer that died holding the lock (killed by mpirun) leaves it consistent: the
        // fields are only ever written whole, under the lock.
        if (pthread_mutex_lock(&h->mutex) == EOWNERDEAD) pthread_mutex_consistent(&h->mutex);
    }
    ~Lock() { pthread_mutex_unlock(&h->mutex); }
};

timespec deadline_after(double seconds) {
    timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    auto ns = static_cast<long long>(seconds * 1e9) + t.tv_nsec;
    t.tv_sec += ns / 1000000000;
    t.tv_nsec = ns % 1000000000;
    return t;
}

// Waits under the lock until `done()` or the deadline; returns `done()`.
template <typename F> bool wait_until(Header* h, const timespec& deadline, F done) {
    while (!done()) {
        int e = pthread_cond_timedwait(&h->changed, &h->mutex, &deadline);
        if (e == EOWNERDEAD) pthread_mutex_consistent(&h->mutex);
        if (e == ETIMEDOUT) return done();
    }
    return true;
}

bool everyone(const Header* h, const uint64_t* counts, uint64_t at_least) {
    for (int i = 0; i < h->nranks; ++i)
        if (counts[i] < at_least) return false;
    return true;
}

// Maps `bytes` of segment `name`, creating it (read-write) or opening it (read-only).
void* map_segment(const std::string& name, size_t bytes, bool create) {
    int fd = create ? shm_open(name.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600) : shm_open(name.c_str(), O_RDONLY, 0);
    if (fd < 0) return nullptr;
    if (create && ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
        close(fd);
        shm_unlink(name.c_str());
        return nullptr;
    }
    void* p = mmap(nullptr, bytes, create ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    return p == MAP_FAILED ? nullptr : p;
}

// A shared-memory name for the id (which NCCL treats as opaque bytes).
std::string segment_name(const char* id) {
    std::string name = "/tapegrad-nccl-";
    for (size_t i = 0; i < 128 && id[i]; ++i) name += isalnum(static_cast<unsigned char>(id[i])) ? id[i] : '_';
    return name;
}
}  // namespace

struct ShmClique {
    std::string name;
    Header* h = nullptr;
    int rank = 0;
    uint64_t seq = 0;
};

int shm_nranks(const ShmClique* c) { return c->h->nranks; }

int shm_join(const char* id, int nranks, int rank, ShmClique** out) {
    if (nranks > kMaxRanks) {
        fprintf(stderr, "fake nccl: at most %d ranks across processes, asked for %d\n", kMaxRanks, nranks);
        return InvalidArgument;
    }
    std::string name = segment_name(id);
    auto give_up = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s());
    int fd = shm_open(name.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
    const bool creator = fd >= 0;
    if (!creator) {
        if (errno != EEXIST || (fd = shm_open(name.c_str(), O_RDWR, 0)) < 0) return SystemError;
    } else if (ftruncate(fd, sizeof(Header)) != 0) {
        close(fd);
        shm_unlink(name.c_str());
        return SystemError;
    }
    // A joiner may open the segment before its creator has sized it.
    struct stat st{};
    while (fstat(fd, &st) == 0 && static_cast<size_t>(st.st_size) < sizeof(Header)) {
        if (std::chrono::steady_clock::now() > give_up) {
            close(fd);
            return RemoteError;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    void* p = mmap(nullptr, sizeof(Header), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) return SystemError;
    auto* h = static_cast<Header*>(p);
    if (creator) {
        pthread_mutexattr_t ma;
        pthread_mutexattr_init(&ma);
        pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
        pthread_mutexattr_setrobust(&ma, PTHREAD_MUTEX_ROBUST);
        pthread_mutex_init(&h->mutex, &ma);
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setpshared(&ca, PTHREAD_PROCESS_SHARED);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&h->changed, &ca);
        h->nranks = nranks;
        h->ready.store(1, std::memory_order_release);
    }
    while (h->ready.load(std::memory_order_acquire) == 0) {
        if (std::chrono::steady_clock::now() > give_up) {
            munmap(h, sizeof(Header));
            return RemoteError;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    {
        Lock lock(h);
        if (h->nranks != nranks || h->member[rank]) {
            fprintf(stderr, "fake nccl: rank %d of %d joins a clique of %d ranks%s\n", rank, nranks, h->nranks,
                    h->member[rank] ? " where that rank has joined already" : "");
            return InvalidUsage;
        }
        h->member[rank] = true;
        if (++h->joined == nranks) shm_unlink(name.c_str());  // everyone has it mapped
        pthread_cond_broadcast(&h->changed);
        if (!wait_until(h, deadline_after(timeout_s()), [&] { return h->joined == h->nranks || h->aborted; }) ||
            h->aborted) {
            shm_unlink(name.c_str());
            return RemoteError;
        }
    }
    *out = new ShmClique{name, h, rank, 0};
    return Success;
}

int shm_collective(ShmClique* c, const Op& op) {
    Header* h = c->h;
    const int n = h->nranks;
    const uint64_t seq = c->seq++;
    const size_t bytes = op.count * elem_size(op.dtype);
    auto data_name = [&](int rank) { return c->name + "-" + std::to_string(rank) + "-" + std::to_string(seq); };
    // Segments cannot be empty: one byte at least.
    void* mine = map_segment(data_name(c->rank), bytes ? bytes : 1, true);
    if (!mine) return SystemError;
    if (bytes) memcpy(mine, op.send, bytes);
    auto drop_mine = [&] {
        munmap(mine, bytes ? bytes : 1);
        shm_unlink(data_name(c->rank).c_str());
    };
    std::vector<Posted> posted(n);
    {
        Lock lock(h);
        if (h->aborted) {
            drop_mine();
            return InvalidUsage;
        }
        h->posted[c->rank] = Posted{op.kind, op.dtype, op.op, op.root, op.count};
        h->arrived[c->rank] = seq + 1;
        pthread_cond_broadcast(&h->changed);
        bool all = wait_until(h, deadline_after(timeout_s()),
                              [&] { return h->aborted || everyone(h, h->arrived, seq + 1); });
        if (h->aborted) {
            drop_mine();
            return InvalidUsage;
        }
        if (!all) {
            // This rank's part leaves the round: a late peer waits for it and times out
            // instead of reading a segment that is gone.
            h->arrived[c->rank] = seq;
            drop_mine();
            fprintf(stderr, "fake nccl: a rank in another process never joined collective #%llu\n",
                    (unsigned long long)seq);
            return RemoteError;
        }
        for (int i = 0; i < n; ++i) posted[i] = h->posted[i];
    }
    std::vector<Op> ops(n);
    std::vector<std::pair<void*, size_t>> peers;
    int result = Success;
    for (int i = 0; i < n; ++i) {
        const Posted& p = posted[i];
        ops[i] = Op{p.kind, p.dtype, p.op, p.root, p.count, nullptr, i == c->rank ? op.recv : nullptr};
        size_t peer_bytes = p.count * elem_size(p.dtype);
        if (i == c->rank) {
            ops[i].send = mine;
            continue;
        }
        void* seg = map_segment(data_name(i), peer_bytes ? peer_bytes : 1, false);
        if (!seg) {
            result = SystemError;
            break;
        }
        peers.push_back({seg, peer_bytes ? peer_bytes : 1});
        ops[i].send = seg;
    }
    if (result == Success) result = agree(ops) ? Success : InvalidUsage;
    if (result == Success) execute(ops);
    for (auto& [seg, size] : peers) munmap(seg, size);
    {
        // Every rank has read this rank's segment before it goes.
        Lock lock(h);
        h->left[c->rank] = seq + 1;
        pthread_cond_broadcast(&h->changed);
        if (!wait_until(h, deadline_after(timeout_s()), [&] { return h->aborted || everyone(h, h->left, seq + 1); }))
            result = RemoteError;
        if (h->aborted) result = InvalidUsage;
    }
    drop_mine();
    return result;
}

void shm_abort(ShmClique* c) {
    Lock lock(c->h);
    c->h->aborted = 1;
    pthread_cond_broadcast(&c->h->changed);
}

void shm_leave(ShmClique* c) {
    munmap(c->h, sizeof(Header));
    delete c;
}
}  // namespace fake_nccl
