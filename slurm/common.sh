# shellcheck shell=bash
# Shared by the Axon batch scripts (sourced, not run). Sets AXON_BIN and TRAIN_ARGS defaults and
# defines axon_train, which trains through axonrun (srun inside the allocation) and ends the job's
# output with the training JSON.

# AXON_BIN: the folder with axonrun and fashion_mnist; default the build/bin of this checkout.
AXON_BIN=${AXON_BIN:-$axon_checkout/build/bin}
for tool in axonrun fashion_mnist; do
  if [[ ! -x $AXON_BIN/$tool ]]; then
    echo "axon batch script: $AXON_BIN/$tool is missing or not executable; build Axon (scripts/build.sh) or set AXON_BIN" >&2
    exit 2
  fi
done

# axon_train [axonrun options...]: fashion_mnist with $TRAIN_ARGS on the allocation's tasks. Its
# stdout is held back and printed last, so the job's last output line is the training JSON
# (srun forwards stdout and stderr separately, so they could otherwise interleave in any order).
axon_train() {
  local out status=0
  out=$(mktemp "${TMPDIR:-/tmp}/axon-train-${SLURM_JOB_ID:-local}-XXXXXX")
  echo "axon: job ${SLURM_JOB_ID:-?} on ${SLURM_JOB_NODELIST:-$(hostname)}: ${SLURM_NTASKS:-?} tasks;" \
       "$AXON_BIN/fashion_mnist $TRAIN_ARGS" >&2
  # TRAIN_ARGS is split into words on purpose: it holds several arguments.
  # shellcheck disable=SC2086
  "$AXON_BIN/axonrun" "$@" -- "$AXON_BIN/fashion_mnist" $TRAIN_ARGS >"$out" || status=$?
  cat "$out"
  rm -f "$out"
  return "$status"
}
