#include "axon/preemption.h"

#include <fmt/format.h>

#include <atomic>
#include <cstring>
#include <stdexcept>

namespace axon {

namespace {
std::atomic<int> g_signal{0};
std::atomic<bool> g_installed{false};
static_assert(std::atomic<int>::is_always_lock_free, "the signal handler needs a lock-free flag");

extern "C" void on_preemption_signal(int signal) { g_signal.store(signal, std::memory_order_relaxed); }
}  // namespace

void install_preemption_handler(std::initializer_list<int> signals) {
  for (int signal : signals) {
    struct sigaction action {};
    action.sa_handler = on_preemption_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;  // system calls in progress (I/O, MPI polling) continue
    if (sigaction(signal, &action, nullptr) != 0)
      throw std::runtime_error(fmt::format("preemption: cannot handle signal {} ({}): {}", signal, strsignal(signal),
                                           std::strerror(errno)));
  }
  g_installed = true;
}

bool preemption_handler_installed() { return g_installed.load(); }
int preemption_signal() { return g_signal.load(std::memory_order_relaxed); }
void clear_preemption() { g_signal.store(0); }

}  // namespace axon
