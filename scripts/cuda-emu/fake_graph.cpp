// Stream capture, graph instantiation and replay for the fake driver (see capture.h).
//
// While a stream captures, every launch, copy, memset and library call queued on it is
// recorded in order (launch arguments and host scalars copied by value, as a real driver
// copies them into the graph's nodes) and not run; cuGraphLaunch runs the recorded work in
// that order. One stream is in order, so a chain replays what the stream would have run.
//
// What a real driver rejects during capture fails here with its error code and
// invalidates the capture (cuStreamEndCapture then returns CUDA_ERROR_STREAM_CAPTURE_-
// INVALIDATED and no graph): cuMemAlloc/cuMemFree/cuMemHostAlloc, stream, context and event
// synchronisation, copies between the device and pageable host memory, and work on the
// legacy default stream. FAKE_CUDA_TRACE_CAPTURE=1 prints why a capture was invalidated.
#include "capture.h"
#include "pending.h"
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

namespace {
enum : int {
    ILLEGAL_STATE = 401,
    CAPTURE_UNSUPPORTED = 900,
    CAPTURE_INVALIDATED = 901,
    CAPTURE_IMPLICIT = 906,
    CAPTURE_WRONG_THREAD = 908,
    INVALID_VALUE = 1,
};
enum : int { MODE_GLOBAL = 0, MODE_THREAD_LOCAL = 1, MODE_RELAXED = 2 };

struct Graph { std::vector<EmuWork> work; };

struct Capture {
    void* stream = nullptr;  // null: no capture
    int mode = MODE_GLOBAL;
    std::thread::id thread;
    bool invalidated = false;
    std::vector<EmuWork> work;
};

std::recursive_mutex mutex;
Capture capture;
std::map<uintptr_t, size_t> pinned;

void invalidate(const char* why) {
    if (!capture.invalidated && getenv("FAKE_CUDA_TRACE_CAPTURE")) fprintf(stderr, "fake cuda: capture invalidated: %s\n", why);
    capture.invalidated = true;
}
}  // namespace

int emu_stream_work(void* stream, EmuWork work) {
    {
        std::lock_guard<std::recursive_mutex> lock(mutex);
        if (capture.stream) {
            if (stream == capture.stream) {
                if (!capture.invalidated) capture.work.push_back(std::move(work));
                return capture.invalidated ? CAPTURE_INVALIDATED : 0;
            }
            if (stream == nullptr) {
                invalidate("work queued on the legacy default stream");
                return CAPTURE_IMPLICIT;
            }
        }
    }
    // Stream order: work that completes later (a queued collective, pending.h) comes first.
    // Waited for before taking `running`: the peer whose part completes it may be running.
    emu_stream_wait(stream);
    // Threads driving different devices share the kernels' globals (blockDim, shared
    // memory): work runs one piece at a time.
    static std::recursive_mutex running;
    std::lock_guard<std::recursive_mutex> lock(running);
    return work();
}

int emu_forbidden_during_capture(const char* what) {
    std::lock_guard<std::recursive_mutex> lock(mutex);
    if (!capture.stream || capture.mode == MODE_RELAXED) return 0;
    if (capture.mode == MODE_THREAD_LOCAL && std::this_thread::get_id() != capture.thread) return 0;
    invalidate(what);
    return CAPTURE_UNSUPPORTED;
}

bool emu_records(void* stream) {
    std::lock_guard<std::recursive_mutex> lock(mutex);
    return capture.stream && capture.stream == stream;
}

int emu_uncapturable(const char* what) {
    std::lock_guard<std::recursive_mutex> lock(mutex);
    invalidate(what);
    return CAPTURE_UNSUPPORTED;
}

bool emu_capturing() {
    std::lock_guard<std::recursive_mutex> lock(mutex);
    return capture.stream != nullptr;
}

void emu_note_pinned(void* p, size_t bytes) {
    std::lock_guard<std::recursive_mutex> lock(mutex);
    pinned[(uintptr_t)p] = bytes;
}
void emu_forget_pinned(void* p) {
    std::lock_guard<std::recursive_mutex> lock(mutex);
    pinned.erase((uintptr_t)p);
}
bool emu_is_pinned(const void* p, size_t bytes) {
    std::lock_guard<std::recursive_mutex> lock(mutex);
    auto it = pinned.upper_bound((uintptr_t)p);
    if (it == pinned.begin()) return false;
    --it;
    return (uintptr_t)p + bytes <= it->first + it->second;
}

#pragma GCC visibility push(default)
extern "C" {
typedef int CUresult;

CUresult cuStreamBeginCapture_v2(void* stream, int mode) {
    std::lock_guard<std::recursive_mutex> lock(mutex);
    if (stream == nullptr) return CAPTURE_UNSUPPORTED;  // the legacy stream cannot capture
    if (mode < MODE_GLOBAL || mode > MODE_RELAXED) return INVALID_VALUE;
    if (capture.stream) return ILLEGAL_STATE;
    capture = Capture{stream, mode, std::this_thread::get_id(), false, {}};
    return 0;
}

CUresult cuStreamEndCapture(void* stream, void** graph) {
    std::lock_guard<std::recursive_mutex> lock(mutex);
    *graph = nullptr;
    if (!capture.stream || capture.stream != stream) return ILLEGAL_STATE;
    if (capture.mode == MODE_THREAD_LOCAL && std::this_thread::get_id() != capture.thread) return CAPTURE_WRONG_THREAD;
    Capture done = std::move(capture);
    capture = Capture{};
    if (done.invalidated) return CAPTURE_INVALIDATED;
    *graph = new Graph{std::move(done.work)};
    return 0;
}

CUresult cuStreamIsCapturing(void* stream, int* status) {
    std::lock_guard<std::recursive_mutex> lock(mutex);
    *status = capture.stream && capture.stream == stream ? (capture.invalidated ? 2 : 1) : 0;
    return 0;
}

CUresult cuGraphInstantiateWithFlags(void** exec, void* graph, unsigned long long) {
    if (!graph) return INVALID_VALUE;
    *exec = new Graph(*(Graph*)graph);
    return 0;
}

CUresult cuGraphLaunch(void* exec, void* stream) {
    if (!exec) return INVALID_VALUE;
    Graph* g = (Graph*)exec;
    return emu_stream_work(stream, [g] {
        for (auto& w : g->work)
            if (int e = w()) return e;
        return 0;
    });
}

CUresult cuGraphUpload(void* exec, void*) { return exec ? 0 : INVALID_VALUE; }
CUresult cuGraphExecDestroy(void* exec) { delete (Graph*)exec; return 0; }
CUresult cuGraphDestroy(void* graph) { delete (Graph*)graph; return 0; }
}
#pragma GCC visibility pop
