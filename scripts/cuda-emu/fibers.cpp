// The threads of a cooperative kernel (one that calls __syncthreads or a warp shuffle) as
// fibers on the launching OS thread. One OS thread per CUDA thread, as this emulator first
// did, made every barrier a round of futex wake-ups among hundreds of threads on a 2-core
// machine; a fiber switch is a function call's worth of work by comparison (on x86-64 a
// hand-written register swap: glibc's swapcontext makes a sigprocmask system call per
// switch, which was a third of the emulator's time), and the fibers of a launch run in a
// fixed order, so a kernel computes the same bits on every run.
//
// Semantics kept from a GPU: a barrier releases its threads only when all of them (the
// block's for __syncthreads, the warp's for __syncwarp and the shuffles) have arrived; a
// thread that leaves the kernel while others wait at a barrier it never reaches is a bug a
// GPU would hang on, reported here as an error. `__shared__` memory is static (emu.h), so
// the next block starts only after every thread passed the block-end barrier.
#include "emu.h"
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sys/mman.h>
#include <unistd.h>
#if !defined(__x86_64__)
#include <ucontext.h>
#endif

namespace {
// A suspended fiber (or the scheduler): where its registers were saved.
#if defined(__x86_64__)
// Saves the callee-saved registers, MXCSR and the x87 control word on the current stack,
// stores the stack pointer in *from, and resumes the context saved at `to`.
extern "C" void emu_fiber_switch(void** from, void* to);
asm(R"(
    .text
    .p2align 4
    .globl emu_fiber_switch
    .hidden emu_fiber_switch
    .type emu_fiber_switch, @function
emu_fiber_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size emu_fiber_switch, .-emu_fiber_switch
)");
struct Context {
    void* sp = nullptr;
    // A context that starts `entry` (which must never return) on the stack [base, base + bytes).
    void start(void* base, size_t bytes, void (*entry)()) {
        auto top = (uintptr_t)((char*)base + bytes) & ~(uintptr_t)15;
        auto* frame = (uint64_t*)top;
        *--frame = 0;                 // entry's return address: none
        *--frame = (uint64_t)entry;   // where emu_fiber_switch's `ret` goes
        for (int i = 0; i < 6; ++i) *--frame = 0;  // rbp, rbx, r12-r15
        uint32_t control[2] = {0, 0};
        asm volatile("stmxcsr %0\n\tfnstcw %1" : "=m"(control[0]), "=m"(control[1]));
        --frame;
        memcpy(frame, control, 8);
        sp = frame;
    }
    void switch_to(Context& next) { emu_fiber_switch(&sp, next.sp); }
};
#else
struct Context {
    ucontext_t uc;
    void start(void* base, size_t bytes, void (*entry)()) {
        getcontext(&uc);
        uc.uc_stack.ss_sp = base;
        uc.uc_stack.ss_size = bytes;
        uc.uc_link = nullptr;
        makecontext(&uc, entry, 0);
    }
    void switch_to(Context& next) { swapcontext(&uc, &next.uc); }
};
#endif

// Kernel threads keep little on their stacks; a guard page below each catches overflow.
constexpr size_t STACK_BYTES = 256 << 10;

struct Fiber {
    Context context;
    unsigned thread = 0, block = 0;
    int barrier = -1;   // the barrier it waits at (index into Launch::barriers), or -1
    uint64_t round = 0; // that barrier's round when it arrived
    bool done = false;
};

struct Barrier {
    unsigned expected = 0, arrived = 0;
    uint64_t round = 0;
};

struct Launch {
    KernelEntry* kernel = nullptr;
    unsigned blocks = 0;
    void** params = nullptr;
    std::vector<Fiber> fibers;
    std::vector<Barrier> barriers;  // [0]: the block's; [1 + w]: warp w's
    Context scheduler;
    Fiber* current = nullptr;
};

Launch* active = nullptr;
std::vector<void*> stacks;  // reused across launches
std::vector<uint64_t> shuffle_slots;

void not_cooperative() {
    fprintf(stderr, "fake cuda: kernel %s synchronises threads; list it in scripts/cuda-emu/register.py\n",
            emu_running_kernel);
    abort();
}

void* stack(size_t i) {
    while (stacks.size() <= i) {
        long page = sysconf(_SC_PAGESIZE);
        void* p = mmap(nullptr, STACK_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED || mprotect(p, (size_t)page, PROT_NONE) != 0) {
            fprintf(stderr, "fake cuda: no memory for a fiber stack\n");
            abort();
        }
        stacks.push_back(p);
    }
    return stacks[i];
}

void arrive(int index) {
    if (!active) not_cooperative();
    Fiber* f = active->current;
    Barrier& b = active->barriers[index];
    f->barrier = index;
    f->round = b.round;
    if (++b.arrived == b.expected) {
        b.arrived = 0;
        ++b.round;
    }
    f->context.switch_to(active->scheduler);
}

bool runnable(const Fiber& f) {
    return !f.done && (f.barrier < 0 || active->barriers[f.barrier].round != f.round);
}

// A fiber's life: every block in turn, each closed by the block barrier; then back to the
// scheduler, never to be resumed.
void fiber_main() {
    Fiber* f = active->current;
    for (unsigned b = 0; b < active->blocks; ++b) {
        f->block = b;
        blockIdx.x = b;
        active->kernel->invoke(active->params);
        arrive(0);
    }
    f->done = true;
    f->context.switch_to(active->scheduler);
    abort();
}
}  // namespace

const char* emu_running_kernel = "";
void emu_syncthreads() { arrive(0); }
void emu_syncwarp() { arrive(1 + (int)(threadIdx.x / 32)); }
uint64_t* emu_shuffle_slots() { return shuffle_slots.data(); }

int emu_run_cooperative(KernelEntry* kernel, unsigned grid, unsigned block, void** params) {
    if (block % 32 != 0) {
        fprintf(stderr, "fake cuda: block of %u threads for a block-reducing kernel\n", block);
        return 1;
    }
    Launch launch;
    launch.kernel = kernel;
    launch.blocks = grid;
    launch.params = params;
    launch.fibers.resize(block);
    launch.barriers.resize(1 + block / 32);
    launch.barriers[0].expected = block;
    for (unsigned w = 0; w < block / 32; ++w) launch.barriers[1 + w].expected = 32;
    shuffle_slots.assign(block, 0);
    for (unsigned t = 0; t < block; ++t) {
        Fiber& f = launch.fibers[t];
        f.thread = t;
        f.context.start(stack(t), STACK_BYTES, fiber_main);
    }
    active = &launch;
    int status = 0;
    for (;;) {
        bool ran = false, all_done = true;
        for (Fiber& f : launch.fibers) {
            if (f.done) continue;
            all_done = false;
            if (!runnable(f)) continue;
            f.barrier = -1;
            launch.current = &f;
            threadIdx.x = f.thread;
            blockIdx.x = f.block;
            launch.scheduler.switch_to(f.context);
            ran = true;
        }
        if (all_done) break;
        if (!ran) {
            fprintf(stderr, "fake cuda: kernel %s: threads wait at a barrier that others of their block never reach\n",
                    kernel->name);
            status = 1;
            break;
        }
    }
    active = nullptr;
    return status;
}
