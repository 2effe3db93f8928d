#!/usr/bin/env bash
# A full pgraft run on several GPU nodes under SLURM: one `accelerate launch` per node, all ranks joined by the
# first node. Submit with `sbatch examples/slurm.sh run.yaml /shared/runs/full` (resubmitting the same command
# resumes after the last complete round). The run folder must be on a file system every node sees.
#SBATCH --job-name=pgraft
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --time=24:00:00
#SBATCH --output=%x-%j.log
set -euo pipefail

CONFIG=${1:?usage: sbatch examples/slurm.sh CONFIG.yaml OUT_DIR}
OUT=${2:?usage: sbatch examples/slurm.sh CONFIG.yaml OUT_DIR}
GPUS_PER_NODE=${SLURM_GPUS_PER_NODE:-8}
MAIN_IP=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
RESUME=()
[ -d "$OUT/rounds" ] && RESUME=(--resume)

# shellcheck disable=SC1091
. .venv/bin/activate
export HF_HUB_OFFLINE=1
# One task per node; each starts its node's GPUs as processes, with its node rank.
srun --kill-on-bad-exit=1 bash -c "accelerate launch \
    --multi_gpu --mixed_precision no --dynamo_backend no \
    --num_machines $SLURM_NNODES --num_processes $((SLURM_NNODES * GPUS_PER_NODE)) \
    --machine_rank \$SLURM_NODEID --main_process_ip $MAIN_IP --main_process_port 29500 \
    -m pgraft run --config $CONFIG --out $OUT ${RESUME[*]}"
