#!/usr/bin/env bash
# Multi-host on one machine: two network namespaces ("hosts") joined by a veth pair, one MPI rank
# in each, Open MPI's TCP transport bound to the veth addresses. Runs `axon-bench collectives`
# (every value checked) and a 2-rank fashion_mnist --synthetic job across them, checks that the
# bytes crossed the veth pair, and that training gives bit-identical parameters to the same job
# on one host (shared memory).
#
#   tests/distributed/test_multihost.sh BIN_DIR [MPIRUN]
#
# How the job reaches the second "host": mpirun runs inside the first namespace and starts its
# daemon (orted) on each host of the hostfile through a launcher agent (--mca plm_rsh_agent, in
# place of ssh) that runs the command under `ip netns exec` of the namespace named by the host.
# The hosts are named by their addresses (10.77.0.1, 10.77.0.2), so nothing is added to
# /etc/hosts, which other users of the machine share. --mca pml ob1 --mca btl tcp,self keeps
# Open MPI off shared memory (vader) and UCX: bytes between the ranks can only go over TCP, and
# btl_tcp_if_include/oob_tcp_if_include bind both the data and the control channel to the veth.
#
# Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN for `ip netns`); exits 77 (ctest: skipped) with the
# reason when it cannot create namespaces or veth pairs. Everything it creates (namespaces, veth
# pair, temporary folder, processes inside the namespaces) is removed on exit, also on failure.
set -uo pipefail

bin=${1:?usage: test_multihost.sh BIN_DIR [MPIRUN]}
mpirun=${2:-mpirun}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# No LeakSanitizer in the ranks (see tests/CMakeLists.txt); a no-op in other builds.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0}

id=$$
ns1=axmh${id}a ns2=axmh${id}b
if1=axm${id}a if2=axm${id}b  # at most 15 characters (IFNAMSIZ)
addr1=10.77.0.1 addr2=10.77.0.2
tmp=$(mktemp -d /tmp/axon_multihost.XXXXXX)
created_ns=()

cleanup() {
  for ns in "${created_ns[@]}"; do
    # Processes this test left in its namespaces (a rank of a failed job): only those.
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null  # takes the veth end inside it, and so the pair, along
  done
  ip link del "$if1" 2>/dev/null  # not yet moved into a namespace
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

skip() { echo "SKIPPED: $*"; exit 77; }
fail() { echo "FAILED: $*"; exit 1; }
step() { echo "--- $*"; }

[ "$(id -u)" = 0 ] || skip "network namespaces need root (CAP_NET_ADMIN, CAP_SYS_ADMIN); running as uid $(id -u)"
command -v ip >/dev/null || skip "no 'ip' command (iproute2)"
command -v "$mpirun" >/dev/null || skip "no $mpirun"
[ -x "$bin/axon-bench" ] && [ -x "$bin/fashion_mnist" ] || fail "no axon-bench and fashion_mnist in $bin"

step "setting up namespaces $ns1 ($addr1) and $ns2 ($addr2) joined by veth $if1-$if2"
for ns in "$ns1" "$ns2"; do
  out=$(ip netns add "$ns" 2>&1) || skip "'ip netns add' is not permitted here: $out"
  created_ns+=("$ns")
done
out=$(ip link add "$if1" type veth peer name "$if2" 2>&1) || skip "cannot create a veth pair: $out"
ip link set "$if1" netns "$ns1" && ip link set "$if2" netns "$ns2" || fail "cannot move the veth ends into the namespaces"
ip -n "$ns1" addr add "$addr1/24" dev "$if1" && ip -n "$ns2" addr add "$addr2/24" dev "$if2" || fail "cannot set addresses"
for pair in "$ns1 $if1" "$ns2 $if2"; do
  set -- $pair
  ip -n "$1" link set lo up && ip -n "$1" link set "$2" up || fail "cannot bring up $2 in $1"
done
out=$(ip netns exec "$ns1" true 2>&1) || skip "'ip netns exec' is not permitted here: $out"

# The launcher agent: "agent HOST COMMAND..." as ssh would be called, HOST an address above.
cat >"$tmp/agent.sh" <<EOF
#!/bin/sh
host=\$1; shift
case "\$host" in
  $addr1) ns=$ns1 ;;
  $addr2) ns=$ns2 ;;
  *) echo "agent: unknown host '\$host'" >&2; exit 1 ;;
esac
echo "\$host -> \$ns" >>"$tmp/agent.log"
exec ip netns exec "\$ns" sh -c "\$*"
EOF
chmod +x "$tmp/agent.sh"
printf '%s slots=1\n%s slots=1\n' "$addr1" "$addr2" >"$tmp/hosts"

across() {  # across PROGRAM ARGS...: one rank in each namespace, over TCP on the veth pair only
  timeout -k 10 180 ip netns exec "$ns1" "$mpirun" --hostfile "$tmp/hosts" -np 2 --map-by node \
    --mca plm_rsh_agent "$tmp/agent.sh" --mca plm_rsh_no_tree_spawn 1 \
    --mca pml ob1 --mca btl tcp,self --mca btl_tcp_if_include 10.77.0.0/24 --mca oob_tcp_if_include 10.77.0.0/24 \
    -x ASAN_OPTIONS "$@"
}
tx_bytes() { ip -n "$1" -s link show "$2" | awk '/TX:/ { getline; print $1; exit }'; }

step "axon-bench collectives across the two hosts"
before1=$(tx_bytes "$ns1" "$if1") before2=$(tx_bytes "$ns2" "$if2")
across "$bin/axon-bench" collectives -b 8 -e 1M -f 16 --iters 3 --warmup 1 --compare-mpi --json >"$tmp/bench.out" 2>"$tmp/bench.err"
code=$?
cat "$tmp/bench.out" "$tmp/bench.err"
[ "$code" = 0 ] || fail "axon-bench collectives across the namespaces exited $code"
rows=$(grep -c '^{' "$tmp/bench.out")
good=$(grep -cE '"errors":0[,}]' "$tmp/bench.out")
# 8 B, 128 B, 2 KiB, 32 KiB, 512 KiB for each of the 4 collectives.
[ "$rows" = 20 ] || fail "expected 20 result rows, got $rows"
[ "$good" = 20 ] || fail "$((rows - good)) row(s) with wrong values"
grep -q "$addr2 -> $ns2" "$tmp/agent.log" || fail "no daemon was started in $ns2 (agent log: $(cat "$tmp/agent.log"))"
sent1=$(($(tx_bytes "$ns1" "$if1") - before1)) sent2=$(($(tx_bytes "$ns2" "$if2") - before2))
echo "bytes sent over the veth pair: $sent1 from $ns1, $sent2 from $ns2"
# Each side sends at least its half of 3+1 allreduces of 512 KiB (twice: Axon and raw MPI).
[ "$sent1" -gt 2000000 ] && [ "$sent2" -gt 2000000 ] || fail "the collectives did not go over the veth pair"

step "fashion_mnist --synthetic, 2 ranks across the two hosts, and the same job on one host"
args=(--synthetic 2048 --epochs 1 --batch-size 64 --threads 1 --no-progress --seed 7)
across "$bin/fashion_mnist" "${args[@]}" >"$tmp/train_multi.out" 2>"$tmp/train_multi.err"
code=$?
cat "$tmp/train_multi.err"; tail -n 1 "$tmp/train_multi.out"
[ "$code" = 0 ] || fail "fashion_mnist across the namespaces exited $code"
timeout -k 10 180 "$mpirun" --oversubscribe -np 2 "$bin/fashion_mnist" "${args[@]}" >"$tmp/train_one.out" 2>"$tmp/train_one.err"
code=$?
[ "$code" = 0 ] || { cat "$tmp/train_one.err"; fail "fashion_mnist on one host exited $code"; }
hash() { tail -n 1 "$1" | sed -n 's/.*"params_sha256":"\([0-9a-f]*\)".*/\1/p'; }
world() { tail -n 1 "$1" | sed -n 's/.*"world_size":\([0-9]*\).*/\1/p'; }
[ "$(world "$tmp/train_multi.out")" = 2 ] || fail "the job across hosts did not run 2 ranks"
h_multi=$(hash "$tmp/train_multi.out") h_one=$(hash "$tmp/train_one.out")
echo "parameters: across hosts $h_multi, one host $h_one"
[ -n "$h_multi" ] && [ "$h_multi" = "$h_one" ] || fail "training across hosts gave other parameters than on one host"

echo "PASSED: collectives and data-parallel training across two network namespaces over TCP"
