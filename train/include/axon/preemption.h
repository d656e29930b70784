// Preemption: a cluster asks a job to stop (Slurm's `--signal=USR1@60` before its time limit,
// SIGTERM when it preempts or cancels a job); the job should write a checkpoint at the next step
// boundary and exit cleanly, so that it can be requeued and resumed.
//
// install_preemption_handler() makes the listed signals set a flag instead of killing the
// process; the Trainer (TrainOptions::preemption_checkpoint_dir) looks at it at every check step,
// agrees on it across ranks (a signal that reached any rank counts for all, so every rank stops at
// the same step), writes a checkpoint and halts the loop (LoopState::preempted names the signal).
#pragma once

#include <csignal>
#include <initializer_list>

namespace axon {

// Installs the handler for `signals` (default SIGTERM and SIGUSR1); async-signal-safe (it only
// stores the signal number). Throws std::runtime_error naming the signal when sigaction fails.
void install_preemption_handler(std::initializer_list<int> signals = {SIGTERM, SIGUSR1});
// Whether install_preemption_handler was called in this process.
bool preemption_handler_installed();
// The last preemption signal received, or 0.
int preemption_signal();
void clear_preemption();

}  // namespace axon
