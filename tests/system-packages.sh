#!/usr/bin/env bash
# Installs the Debian packages that tests start for real, when they are missing:
# tests/test_engines.py a one-node Slurm cluster and an sshd on loopback,
# tests/test_browser.py a headless Chromium driven through chromedriver.
# Without root or apt-get it says those tests will skip and succeeds: they skip themselves.
set -euo pipefail

# program -> the package that ships it; one program at a time, since bash's
# `command -v a b` succeeds when any one is found
declare -A package_of=(
    [sshd]=openssh-server [ssh]=openssh-client
    [slurmctld]=slurm-wlm [slurmd]=slurm-wlm [sbatch]=slurm-wlm [munged]=munge
    [chromium]=chromium [chromedriver]=chromium-driver
)
packages=()
for program in "${!package_of[@]}"; do
    if ! PATH="$PATH:/usr/sbin:/sbin" command -v "$program" >/dev/null 2>&1; then
        package=${package_of[$program]}
        [[ " ${packages[*]} " == *" $package "* ]] || packages+=("$package")
    fi
done
[ "${#packages[@]}" = 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "system-packages: not root or no apt-get; without ${packages[*]}" \
         "the Slurm, ssh and browser tests that need them will skip"
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
