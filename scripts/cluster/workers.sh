#!/usr/bin/env bash
# Start N search.py workers on this machine against a shared study database; run the same
# line on every machine (no ssh: each machine starts its own workers).
#
#   export NNSWEEP_STORAGE='postgresql://user:password@dbhost:5432/nnsweep'
#   scripts/cluster/workers.sh 2 --study big --trials 400 data=digits
#
# When all are done, on any machine: python scripts/report.py --study big --storage "$NNSWEEP_STORAGE"
set -euo pipefail
: "${NNSWEEP_STORAGE:?set NNSWEEP_STORAGE to the study database URL (export, not a file)}"
n=${1:?usage: workers.sh N [search.py arguments...]}
shift
mkdir -p outputs/logs
for i in $(seq 0 $((n - 1))); do
  OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \
    python search.py --seed "$((RANDOM + i))" --quiet --no-plots "$@" \
    > "outputs/logs/worker-$(hostname)-$i.log" 2>&1 &
done
wait
