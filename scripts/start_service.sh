#!/usr/bin/env bash
# The counterpart of the original product's start_service.sh: the same variables and
# defaults, plus NPROC_PER_NODE and DEVICE. It prints the configuration, then runs the same
# supervisor as `make run` (web, the two django-q2 clusters, and the inference daemon under torchrun),
# in the foreground; Ctrl-C or SIGTERM stops everything it started. It never kills processes
# by name: a second copy on the same port fails on its own.
#
#   scripts/start_service.sh                                   # 8 cards, the original defaults
#   T5_CPU=true scripts/start_service.sh                       # 910B 24 GB: T5 in host memory
#   DEVICE=cpu NPROC_PER_NODE=4 scripts/start_service.sh       # 4 CPU ranks, the tiny model
#
# Several hosts, one daemon group: the same NNODES, MASTER_ADDR, MASTER_PORT and DATABASE_URL on
# every host, NODE_RANK=0 on the host that also serves the web (see the README).
set -euo pipefail
cd "$(dirname "$0")/.."

# ==================== device ====================
export DEVICE=${DEVICE:-auto}
detect_devices() {
    # Visible accelerators of the requested kind (auto: CUDA, else Ascend), else 1 (the CPU).
    local count=0
    if [[ "$DEVICE" == cuda || "$DEVICE" == auto ]] && command -v nvidia-smi >/dev/null 2>&1; then
        count=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
    fi
    if [[ "$count" == 0 && ( "$DEVICE" == npu || "$DEVICE" == auto ) ]] && command -v npu-smi >/dev/null 2>&1; then
        count=$(npu-smi info -l 2>/dev/null | grep -ci 'NPU ID' || true)
    fi
    echo $(( count > 0 ? count : 1 ))
}
export NPROC_PER_NODE=${NPROC_PER_NODE:-$(detect_devices)}
export NNODES=${NNODES:-1}
export NODE_RANK=${NODE_RANK:-0}
export MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
export MASTER_PORT=${MASTER_PORT:-29500}
is_npu=false
if [[ "$DEVICE" == npu || ( "$DEVICE" == auto && "$(command -v npu-smi || true)" != "" && "$(command -v nvidia-smi || true)" == "" ) ]]; then
    is_npu=true
fi

# ==================== the original's switches ====================
export T5_CPU=${T5_CPU:-false}
export DIT_FSDP=${DIT_FSDP:-true}
export T5_FSDP=${T5_FSDP:-false}
export VAE_PARALLEL=${VAE_PARALLEL:-true}
export CFG_SIZE=${CFG_SIZE:-1}
# The original's ULYSSES_SIZE=8 on 8 cards is "all the ranks CFG leaves": unset, the daemon
# derives it from the world size; set, it must fit (ULYSSES_SIZE x RING_SIZE x CFG_SIZE = ranks).
WORLD=$(( NPROC_PER_NODE * NNODES ))
ULYSSES_SHOWN=${ULYSSES_SIZE:-"$(( WORLD / (CFG_SIZE * ${RING_SIZE:-1}) )) (derived)"}

# ==================== business ====================
if [[ "$T5_CPU" == true ]]; then
    # T5 encodes on the host while the other ranks wait: fewer jobs at once, longer timeouts.
    export MAX_CONCURRENT_TASKS=${MAX_CONCURRENT_TASKS:-2}
    export TASK_TIMEOUT=${TASK_TIMEOUT:-2400}
    export DIST_TIMEOUT_SECONDS=${DIST_TIMEOUT_SECONDS:-2400}
    hccl_timeout=2400
else
    export MAX_CONCURRENT_TASKS=${MAX_CONCURRENT_TASKS:-5}
    export TASK_TIMEOUT=${TASK_TIMEOUT:-1800}
    hccl_timeout=1800
fi
export SERVER_PORT=${SERVER_PORT:-8088}
export MAX_OUTPUT_DIR_SIZE=${MAX_OUTPUT_DIR_SIZE:-50}
export TOKENIZERS_PARALLELISM=false
export INFERENCE_NPROC=$NPROC_PER_NODE
# The original's default model path (/data/models/modelscope/hub/Wan-AI/Wan2.1-I2V-14B-720P) is
# not assumed: unset runs the tiny random-weight model, as `make run` does.
MODEL_SHOWN=${MODEL_CKPT_DIR:-"(unset: the tiny random-weight model, noise only)"}

# ==================== Ascend NPU and HCCL ====================
if [[ "$is_npu" == true ]]; then
    export ALGO=${ALGO:-0}
    export PYTORCH_NPU_ALLOC_CONF=${PYTORCH_NPU_ALLOC_CONF:-expandable_segments:True}
    export TASK_QUEUE_ENABLE=${TASK_QUEUE_ENABLE:-2}
    export CPU_AFFINITY_CONF=${CPU_AFFINITY_CONF:-1}
    export HCCL_TIMEOUT=${HCCL_TIMEOUT:-$hccl_timeout}
    export HCCL_CONNECT_TIMEOUT=${HCCL_CONNECT_TIMEOUT:-600}
    export HCCL_BUFFSIZE=${HCCL_BUFFSIZE:-512}
    export ASCEND_LAUNCH_BLOCKING=${ASCEND_LAUNCH_BLOCKING:-0}
    export ASCEND_GLOBAL_LOG_LEVEL=${ASCEND_GLOBAL_LOG_LEVEL:-1}
    devices=$(seq -s, 0 $(( NPROC_PER_NODE - 1 )))
    export NPU_VISIBLE_DEVICES=${NPU_VISIBLE_DEVICES:-$devices}
    export ASCEND_RT_VISIBLE_DEVICES=${ASCEND_RT_VISIBLE_DEVICES:-$devices}
fi

# ==================== several hosts ====================
if (( NNODES > 1 )); then
    if [[ -z "${DATABASE_URL:-}" ]]; then
        echo "NNODES=$NNODES needs DATABASE_URL: every host of the group uses the one shared Postgres" >&2
        exit 2
    fi
    # Only the first host serves the web and the django-q2 cluster.
    if (( NODE_RANK > 0 )); then export SERVICE_ROLES=${SERVICE_ROLES:-inference}; fi
fi

# ==================== show ====================
echo "Wan2.1 I2V service"
echo "Configuration:"
echo "  - Device: $DEVICE x $NPROC_PER_NODE per node, $NNODES node(s) (node rank $NODE_RANK), $WORLD rank(s)"
echo "  - T5 CPU mode: $T5_CPU"
echo "  - DIT FSDP: $DIT_FSDP"
echo "  - T5 FSDP: $T5_FSDP"
echo "  - VAE Parallel: $VAE_PARALLEL"
echo "  - Ulysses Size: $ULYSSES_SHOWN"
echo "  - Ring Size: ${RING_SIZE:-1}"
echo "  - CFG Size: $CFG_SIZE"
echo "  - Max Concurrent: $MAX_CONCURRENT_TASKS"
echo "  - Task Timeout: $TASK_TIMEOUT seconds"
echo "  - Server Port: $SERVER_PORT"
echo "  - Model Path: $MODEL_SHOWN"
if [[ "$is_npu" == true ]]; then
    echo "  - HCCL: timeout $HCCL_TIMEOUT s, connect timeout $HCCL_CONNECT_TIMEOUT s, buffer $HCCL_BUFFSIZE MB"
fi
echo "  - Roles on this host: ${SERVICE_ROLES:-web,qcluster,inference}"

# ==================== start ====================
make --no-print-directory install >/dev/null
exec .venv/bin/python manage.py run_service
