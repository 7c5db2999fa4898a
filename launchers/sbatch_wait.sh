#!/usr/bin/env bash
# Run one DVC stage command as a SLURM batch job and wait for it; exits with the job's status.
#   dvc exp run -S launcher=launchers/sbatch_wait.sh
# Resources come from sbatch's own environment variables, e.g.
#   SBATCH_PARTITION=gpu SBATCH_GRES=gpu:1 SBATCH_TIMELIMIT=2:00:00 SBATCH_MEM_PER_NODE=64G
# The job log goes to slurm-logs/<job id>.log in the workspace (the experiment's copy of it).
set -euo pipefail
mkdir -p slurm-logs
# %q keeps every argument intact through the shell that --wrap starts.
command_line=$(printf '%q ' "$@")
exec sbatch --wait --parsable --chdir="$PWD" --job-name="dvc-${3:-stage}" \
    --output="slurm-logs/%j.log" --export=ALL --wrap="$command_line"
