// File: cqrs/core/adaptive_mutex.h
//
// A mutex for the short critical sections of the command path (a hash lookup, an offset
// increment): when it is held, lock() first spins for a moment (the holder is most likely
// running on another core and about to release it) and only then sleeps in the kernel.
// std::mutex sleeps at once, and on a busy 2-core server every such sleep costs a context
// switch and a wake-up of ~5-10 µs for a section of ~100 ns. glibc's PTHREAD_MUTEX_ADAPTIVE_NP.
//
//   AdaptiveMutex mutex;
//   std::lock_guard lock(mutex);

#ifndef CQRS_CORE_ADAPTIVE_MUTEX_H_
#define CQRS_CORE_ADAPTIVE_MUTEX_H_

#include <pthread.h>

#include "absl/base/thread_annotations.h"

namespace cqrs {

class ABSL_LOCKABLE AdaptiveMutex {
 public:
  AdaptiveMutex() noexcept {
    pthread_mutexattr_t attributes;
    pthread_mutexattr_init(&attributes);
    pthread_mutexattr_settype(&attributes, PTHREAD_MUTEX_ADAPTIVE_NP);
    pthread_mutex_init(&mutex_, &attributes);
    pthread_mutexattr_destroy(&attributes);
  }
  ~AdaptiveMutex() { pthread_mutex_destroy(&mutex_); }
  AdaptiveMutex(const AdaptiveMutex&) = delete;
  AdaptiveMutex& operator=(const AdaptiveMutex&) = delete;

  void lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { pthread_mutex_lock(&mutex_); }
  bool try_lock() ABSL_EXCLUSIVE_TRYLOCK_FUNCTION(true) {
    return pthread_mutex_trylock(&mutex_) == 0;
  }
  void unlock() ABSL_UNLOCK_FUNCTION() { pthread_mutex_unlock(&mutex_); }

 private:
  pthread_mutex_t mutex_;
};

}  // namespace cqrs

#endif  // CQRS_CORE_ADAPTIVE_MUTEX_H_
