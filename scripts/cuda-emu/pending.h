// Work that completes after the call that queued it, in the fake driver (fake_driver.cpp).
//
// The fake driver runs every piece of work when it is queued. The one exception is the fake
// libnccl's queued mode (fake_nccl.cpp, TAPEGRAD_EMU_NCCL_QUEUE=1): a collective is queued
// on the stream and completes only when every rank's part has arrived, as on a GPU, where a
// dead peer leaves the NCCL kernel (and so the stream) stuck until ncclCommAbort. Such work
// is a fence held on its stream. Until it is signalled, work queued later on that stream
// waits for it (the host thread blocks where a GPU would queue: the order is the same), so
// do cuStreamSynchronize, cuCtxSynchronize and cuEventSynchronize on an event recorded after
// it, cuEventQuery on such an event reports CUDA_ERROR_NOT_READY, and cuMemFree waits for
// every fence of the device (a real cuMemFree synchronises too).
#pragma once
#include <memory>

struct EmuFence;

// A fence not yet signalled.
std::shared_ptr<EmuFence> emu_fence_new();

// Marks the fence's work done and wakes whoever waits for it (the stream's later work).
void emu_fence_signal(EmuFence& fence);

// Whether the fence was signalled.
bool emu_fence_done(EmuFence& fence);

// Makes work queued on `stream` from now on wait for `fence` (and for what it waited for
// already). `stream` must be a stream of the fake driver, not the legacy default one.
void emu_stream_hold(void* stream, std::shared_ptr<EmuFence> fence);

// Blocks until every fence held on `stream` is signalled (nothing for the legacy default
// stream: tapegrad's streams do not synchronise with it).
void emu_stream_wait(void* stream);
