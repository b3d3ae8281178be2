#!/usr/bin/env bash
# Installs the Debian packages that tests/test_engines.py starts for real (a one-node
# Slurm cluster and an sshd on loopback), when they are missing.  Without root or
# apt-get it says the engine tests will skip and succeeds: they skip themselves.
set -euo pipefail

packages=(openssh-server openssh-client slurm-wlm munge)
# one name at a time: bash's `command -v a b` succeeds when any one is found
missing=0
for program in sshd slurmctld slurmd munged sbatch ssh; do
    PATH="$PATH:/usr/sbin:/sbin" command -v "$program" >/dev/null 2>&1 || missing=1
done
[ "$missing" = 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "system-packages: not root or no apt-get; the Slurm and ssh engine tests will skip"
    exit 0
fi

log="${TMPDIR:-/tmp}/distributed3-system-packages.log"
install() {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "${packages[@]}" >>"$log" 2>&1
}
echo "system-packages: installing ${packages[*]} (log: $log)"
: >"$log"
if ! install; then
    # a fresh image has no package lists yet: fetch them once, then try again
    if ! { apt-get update -q >>"$log" 2>&1 && install; }; then
        echo "system-packages: apt-get failed; the end of $log:" >&2
        tail -n 20 "$log" >&2
        exit 1
    fi
fi
