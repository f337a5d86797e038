/// @file
/// @brief The IPC module: typed channels between threads and processes.
///
/// - ptk::pipe: a duplex channel over two kernel pipes (multiprocessing.Pipe)
/// - ptk::shm_ring: a single-producer/single-consumer ring in shared memory
/// - ptk::queue: a multi-producer/multi-consumer queue in shared memory (multiprocessing.Queue)
/// - ptk::shared_memory, ptk::shared_value, ptk::shared_array (shared_memory, Value, Array)
/// - ptk::codec: how a type crosses a process boundary
#pragma once

#include <ptk/ipc/channel.hpp>
#include <ptk/ipc/codec.hpp>
#include <ptk/ipc/pipe.hpp>
#include <ptk/ipc/queue.hpp>
#include <ptk/ipc/shared_memory.hpp>
#include <ptk/ipc/shared_value.hpp>
#include <ptk/ipc/shm_ring.hpp>
