#!/usr/bin/env bash
# `make test-slurm`: the tiny test study through `--profile profiles/slurm` on a one-node SLURM
# cluster on loopback (tests/slurm/cluster.sh), compared with a local run of the same study:
#   - every SLURM job must finish COMPLETED, and every non-local job must have gone through sbatch;
#   - the tables (results/tables/*.csv) must be byte-identical to the local run's.
# Installs Debian's slurm-wlm and munge if missing and starts/stops the daemons: needs root (or
# sudo). Takes a few minutes (SLURM's scheduling and status polling add up on ~50 small jobs).
#
# Environment: SNAKEMAKE (default .venv/bin/snakemake), KEEP=1 keeps the temporary directory,
# TIMINGS=<file> appends "local_s slurm_s jobs" to that file.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$REPO"
SNAKEMAKE=${SNAKEMAKE:-$REPO/.venv/bin/snakemake}
CONFIG=$REPO/tests/configs/tiny.yaml
export PYTHONHASHSEED=0

if [[ $(id -u) -eq 0 ]]; then SUDO=(); else SUDO=(sudo --non-interactive); fi
say() { printf '\n== test-slurm: %s\n' "$*" >&2; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/robustlens-slurm.XXXXXX")
cleanup() {
    local rc=$?
    "${SUDO[@]}" "$REPO/tests/slurm/cluster.sh" stop || true
    if [[ $rc -ne 0 || ${KEEP:-0} == 1 ]]; then
        say "kept $WORK"
    else
        rm -rf "$WORK"
    fi
    exit $rc
}
trap cleanup EXIT

"${SUDO[@]}" "$REPO/tests/slurm/cluster.sh" start
sinfo >&2

say "local run ($WORK/local)"
start=$(date +%s)
"$SNAKEMAKE" --snakefile "$REPO/Snakefile" --directory "$WORK/local" --cores 2 \
    --configfile "$CONFIG" >"$WORK/local.log" 2>&1 || { tail -50 "$WORK/local.log"; exit 1; }
local_s=$(($(date +%s) - start))

say "SLURM run ($WORK/slurm)"
# This cluster has no accounting storage: the plugin must poll squeue, not sacct; there is no
# account to charge. Short first poll: the tiny study's jobs take seconds.
start=$(date +%s)
"$SNAKEMAKE" --snakefile "$REPO/Snakefile" --directory "$WORK/slurm" --profile "$REPO/profiles/slurm" \
    --slurm-status-command squeue --slurm-no-account --slurm-init-seconds-before-status-checks 5 \
    --slurm-keep-successful-logs \
    --configfile "$CONFIG" >"$WORK/slurm.log" 2>&1 || {
    tail -80 "$WORK/slurm.log"
    tail -30 /var/log/robustlens-slurm/slurmctld.log || true
    exit 1
}
slurm_s=$(($(date +%s) - start))

say "checks"
fail=0
# What Snakemake ran, and what went through sbatch.
planned=$(grep -oP '^total\s+\K\d+' "$WORK/slurm.log" | head -1)
local_rules=$(grep -c '^localrule ' "$WORK/slurm.log" || true)
submitted=$(grep -c 'has been submitted with SLURM jobid' "$WORK/slurm.log" || true)
echo "jobs planned $planned, submitted to SLURM $submitted, local rules $local_rules" >&2
if [[ $submitted -eq 0 || $((submitted + local_rules)) -ne $planned ]]; then
    echo "FAIL: not every job went through SLURM" >&2; fail=1
fi
# Every SLURM job of the run finished COMPLETED (MinJobAge=600 keeps them in squeue).
states=$(squeue -h --states=all -o '%T' | sort | uniq -c)
echo "SLURM job states:" >&2; echo "$states" >&2
if [[ $(squeue -h --states=all -o '%T' | grep -vc '^COMPLETED$' || true) -ne 0 ]]; then
    echo "FAIL: a SLURM job did not complete" >&2; fail=1
fi
if [[ $(squeue -h --states=all -o '%T' | grep -c '^COMPLETED$' || true) -lt $submitted ]]; then
    echo "FAIL: fewer COMPLETED jobs than submitted" >&2; fail=1
fi
# A GPU-less node: no job may have asked for a GPU.
if squeue -h --states=all -o '%b' | grep -qi gpu; then
    echo "FAIL: a job requested a GPU" >&2; fail=1
fi
# The tables are byte-identical.
(cd "$WORK/local/results/tables" && ls) >"$WORK/tables.local"
(cd "$WORK/slurm/results/tables" && ls) >"$WORK/tables.slurm"
if ! diff "$WORK/tables.local" "$WORK/tables.slurm" >&2; then
    echo "FAIL: different sets of tables" >&2; fail=1
fi
if [[ ! -s $WORK/tables.local ]]; then
    echo "FAIL: no tables" >&2; fail=1
fi
while read -r table; do
    if cmp "$WORK/local/results/tables/$table" "$WORK/slurm/results/tables/$table" >&2; then
        echo "identical: results/tables/$table" >&2
    else
        echo "FAIL: results/tables/$table differs" >&2; fail=1
    fi
done <"$WORK/tables.local"

printf 'local run %s s, SLURM run %s s, %s jobs (%s through sbatch)\n' \
    "$local_s" "$slurm_s" "$planned" "$submitted" >&2
if [[ -n ${TIMINGS:-} ]]; then
    printf '%s %s %s\n' "$local_s" "$slurm_s" "$planned" >>"$TIMINGS"
fi
if [[ $fail -ne 0 ]]; then
    echo "test-slurm FAILED" >&2
    exit 1
fi
echo "test-slurm passed" >&2
