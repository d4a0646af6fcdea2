// Stream capture in the fake driver (fake_graph.cpp): what fake_driver.cpp and the cuDNN
// wrappers call so that work queued while a stream captures is recorded, not run, and so
// that what a real driver forbids during capture fails here too.
#pragma once
#include <cstddef>
#include <functional>

// One piece of queued work (a launch, a copy, a library call); returns a CUresult (or a
// library status) when it runs.
using EmuWork = std::function<int()>;

// Runs `work` now, or appends it to the capture when `stream` is capturing. A capture on
// another stream, or queueing on the legacy default stream (null) while any stream
// captures, is an error (CUDA_ERROR_STREAM_CAPTURE_IMPLICIT) that invalidates the capture.
int emu_stream_work(void* stream, EmuWork work);

// 0, or CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED (which also invalidates the capture) when a
// capture forbids `what` (an allocation, a free, a synchronisation) on the calling thread:
// any thread in global mode, the capturing thread in thread-local mode, none in relaxed.
int emu_forbidden_during_capture(const char* what);

// Whether some stream is capturing now (whatever the mode).
bool emu_capturing();

// Page-locked host memory (cuMemHostAlloc), which a captured copy may read or write; any
// other host memory is pageable.
void emu_note_pinned(void* p, size_t bytes);
void emu_forget_pinned(void* p);
bool emu_is_pinned(const void* p, size_t bytes);

// Whether work queued on `stream` now would be recorded (it is the capturing stream).
bool emu_records(void* stream);

// Invalidates the capture and returns CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED: for work that
// cannot be captured whatever the mode (a copy between the device and pageable memory).
int emu_uncapturable(const char* what);
