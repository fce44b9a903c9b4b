#!/usr/bin/env bash
# One trd stage as a SLURM job, for clusters where submitit cannot be used (see slurm/README.md).
#
#   python launch/submit.py ... launcher=slurm   # or plan only: stage dirs hold stage.json
#   sbatch -o <stage dir>/slurm-%j.out slurm/sbatch_template.sh <stage dir>
#
# Ranks: one task per GPU; each task's rank, local rank and the world size come from srun's
# SLURM_PROCID / SLURM_LOCALID / SLURM_STEP_NUM_TASKS (trd/engine/distributed.py). The stage config was
# planned for nodes x tasks_per_node ranks (launcher.*): ask SLURM for the same.
#
#SBATCH --job-name=trd-stage
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=4
#SBATCH --time=24:00:00
# GPUs: uncomment and set ntasks-per-node to the same number (a CPU-only cluster refuses --gpus).
##SBATCH --gpus-per-node=1
#
# Preemption and time limits: SLURM sends USR2 to this script (B:) 120 s before the time limit (a
# preemption notice may send it too); the trap requeues the job, SLURM stops the stage and starts it
# again later, and the stage resumes from its last checkpoint (pretrain.checkpoint_every steps).
#SBATCH --requeue
#SBATCH --signal=B:USR2@120
#SBATCH --open-mode=append
set -uo pipefail

STAGE_DIR=${1:?usage: sbatch slurm/sbatch_template.sh <stage dir>}
MAX_REQUEUES=${TRD_MAX_REQUEUES:-3}   # a stage that needs more requeues than this fails instead
PYTHON=${TRD_PYTHON:-python}          # or activate an environment here: source ~/venv/bin/activate

[[ -f "$STAGE_DIR/stage.json" ]] || { echo "trd: $STAGE_DIR/stage.json is missing: plan the experiment first" >&2; exit 2; }

# Every task must agree on rank 0's address; the port is derived from the job id (or set MASTER_PORT).
MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export MASTER_ADDR
# metrics.json names the log, so launch/status.py can point at it when the stage fails.
TRD_JOB_LOG=$(scontrol show job -o "$SLURM_JOB_ID" | sed -n 's/.* StdErr=\([^ ]*\).*/\1/p')
export TRD_JOB_LOG

requeue() {
    local restarts=${SLURM_RESTART_COUNT:-0}
    if (( restarts >= MAX_REQUEUES )); then
        echo "trd: got USR2 after $restarts requeues (TRD_MAX_REQUEUES=$MAX_REQUEUES): not requeueing" >&2
        return
    fi
    echo "trd: got USR2: requeueing job $SLURM_JOB_ID; the stage resumes from its last checkpoint" >&2
    scontrol requeue "$SLURM_JOB_ID"
}
trap requeue USR2

# In the background, so that the trap runs as soon as the signal comes, not after srun returns.
srun --kill-on-bad-exit=1 "$PYTHON" -m trd.runner "$STAGE_DIR" &
step=$!
while true; do
    wait "$step"
    rc=$?
    kill -0 "$step" 2>/dev/null || break   # srun ended; otherwise a trapped signal interrupted the wait
done
exit "$rc"
