// What the fake libnccl's two kinds of clique share (fake_nccl.cpp: ranks in one process,
// fake_nccl_shm.cpp: ranks of ncclCommInitRank, which may live in several processes).
#pragma once
#include <cstddef>
#include <vector>

namespace fake_nccl {
enum Result : int { Success = 0, SystemError = 2, InternalError = 3, InvalidArgument = 4, InvalidUsage = 5, RemoteError = 6 };
enum Kind : int { AllReduce, Broadcast, AllGather };
enum DataType : int { Int64 = 4, Float16 = 6, Float32 = 7, Float64 = 8, Bfloat16 = 9 };
enum RedOp : int { Sum = 0, Avg = 4 };

const char* kind_name(int kind);
// The size of one element of `dtype`, or 0 for a type the fake does not support.
size_t elem_size(int dtype);

// One rank's part of a collective.
struct Op {
    int kind = 0, dtype = 0, op = 0, root = 0;
    size_t count = 0;
    const void* send = nullptr;
    void* recv = nullptr;  // null: this rank's result is not wanted here (another process's rank)
};

// Whether every rank's part describes the same collective (says which differ on stderr).
bool agree(const std::vector<Op>& ops);

// Computes a collective from every rank's part (in rank order: the same bits on every
// rank) into each part's receive buffer. The parts must agree. bf16 and f16 are summed
// (and averaged) in float and rounded once, to nearest even.
void execute(const std::vector<Op>& ops);

// TAPEGRAD_EMU_NCCL_TIMEOUT_S (default 60): how long a rank waits for its peers.
double timeout_s();

// A clique in shared memory (fake_nccl_shm.cpp).
struct ShmClique;
// Joins rank `rank` of `nranks` to the clique of `id`, creating it if this rank is first,
// and waits until every rank has joined.
int shm_join(const char* id, int nranks, int rank, ShmClique** out);
// Runs this rank's part of the clique's next collective: blocks until every rank's part has
// arrived and this rank's result is computed, or until the timeout.
int shm_collective(ShmClique* clique, const Op& op);
// Wakes and fails every rank waiting in a collective of the clique, in every process.
void shm_abort(ShmClique* clique);
// This rank is done with the clique (ncclCommDestroy, after shm_abort for ncclCommAbort).
void shm_leave(ShmClique* clique);
int shm_nranks(const ShmClique* clique);
}  // namespace fake_nccl
