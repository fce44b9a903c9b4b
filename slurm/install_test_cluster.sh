#!/usr/bin/env bash
# Installs what slurm/test_cluster.sh needs, from Debian/Ubuntu packages, if missing.
# Idempotent and quiet; needs root and apt-get.
#
# slurmdbd + mariadb-server-core give the test cluster real accounting, so that
# sacct (which submitit polls for job states) works. mariadb-server-core is the
# bare server binary: unlike mariadb-server it installs no service that would
# start a system-wide database. Set TRD_SLURM_ACCOUNTING=0 to skip those two.
set -euo pipefail

need=()
command -v slurmctld >/dev/null || need+=(slurmctld)
command -v slurmd >/dev/null || need+=(slurmd)
command -v sbatch >/dev/null || need+=(slurm-client)
command -v munged >/dev/null || need+=(munge)
if [[ "${TRD_SLURM_ACCOUNTING:-auto}" != 0 ]]; then
    command -v slurmdbd >/dev/null || need+=(slurmdbd)
    command -v mariadbd >/dev/null || need+=(mariadb-server-core)
fi
[[ ${#need[@]} -eq 0 ]] && exit 0

[[ $EUID -eq 0 ]] || { echo "install_test_cluster.sh: need root to install: ${need[*]}" >&2; exit 1; }
command -v apt-get >/dev/null || { echo "install_test_cluster.sh: no apt-get; install by hand: ${need[*]}" >&2; exit 1; }

export DEBIAN_FRONTEND=noninteractive
log=$(mktemp /tmp/trd-slurm-install.XXXXXX.log)
# Package index may be absent (fresh containers) or stale; only refresh when installing.
if ! apt-get install -y -qq --no-install-recommends "${need[@]}" >"$log" 2>&1; then
    apt-get update -qq >>"$log" 2>&1 || true
    apt-get install -y -qq --no-install-recommends "${need[@]}" >>"$log" 2>&1 \
        || { tail -n 30 "$log" >&2; echo "install_test_cluster.sh: apt-get install ${need[*]} failed (log: $log)" >&2; exit 1; }
fi
rm -f "$log"
