#!/bin/sh
# distributed3 in a container: one image, either role.
#
#   entrypoint.sh center [dcenter options]   dcenter on 0.0.0.0:8787, dashboard and
#                                            health on 8790
#   entrypoint.sh worker [dworker options]   dworker for $DISTRIBUTED3_CENTER (center:8787)
#                                            on this container's IP, port 8788, health 8791
#   entrypoint.sh ready PORT                 exit 0 when GET /ready on PORT answers 200
#
# Options given after the role come last, so they override the defaults here
# (argparse keeps the last occurrence): `entrypoint.sh worker --ncores 4 --port 9000`.
#
# The secret: the file $DISTRIBUTED3_SECRET_FILE (default /run/secrets/distributed3, where
# compose `secrets:` and the Kubernetes manifests put it) when present, else
# $DISTRIBUTED3_SECRET; without either this refuses to start.
#
# Environment: DISTRIBUTED3_CENTER (worker: the center's host:port), DISTRIBUTED3_HOST
# (the address to listen on and advertise; center default 0.0.0.0, worker default what
# `hostname -i` gives: the container's or pod's IP), DISTRIBUTED3_SECRET_FILE,
# DISTRIBUTED3_SECRET, DISTRIBUTED3_DRY_RUN=1 (print the command, one argument a line,
# and exit instead of running it).
set -eu

CENTER_PORT=8787
WORKER_PORT=8788
CENTER_HTTP_PORT=8790
WORKER_HTTP_PORT=8791
SECRET_FILE=${DISTRIBUTED3_SECRET_FILE:-/run/secrets/distributed3}

die() {
    printf 'distributed3 entrypoint: error: %s\n' "$*" >&2
    exit 2
}

usage() {
    die "usage: entrypoint.sh center|worker [options] | entrypoint.sh ready PORT"
}

# The address other containers reach this one at: a worker listens there and tells the
# center so (listening on 0.0.0.0 would advertise 0.0.0.0, which nobody can connect to).
container_ip() {
    if [ -n "${DISTRIBUTED3_HOST:-}" ]; then
        printf '%s\n' "$DISTRIBUTED3_HOST"
        return
    fi
    ips=$(hostname -i 2>/dev/null) ||
        die "cannot find this container's IP (hostname -i failed); set DISTRIBUTED3_HOST"
    first=
    for ip in $ips; do  # dual stack may list several: the first IPv4 one, else the first
        case $ip in
            *:*) first=${first:-$ip} ;;
            *) first=$ip; break ;;
        esac
    done
    case $first in
        "" | 127.* | ::1)
            die "this container's hostname resolves to '${ips}', not an address" \
                "others can reach; set DISTRIBUTED3_HOST" ;;
    esac
    printf '%s\n' "$first"
}

[ $# -ge 1 ] || usage
role=$1
shift

if [ "$role" = ready ]; then
    [ $# -eq 1 ] || usage
    host=$(container_ip)
    case $host in
        0.0.0.0 | "") host=127.0.0.1 ;;
        *:*) host="[$host]" ;;
    esac
    exec python3 -c '
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=5) as r:
        sys.exit(0 if r.status == 200 else 1)
except Exception as e:
    sys.exit(f"not ready: {sys.argv[1]}: {e}")
' "http://$host:$1/ready"
fi

# Refuse to start without a secret: both roles listen beyond loopback, and unpickling
# what an unauthenticated peer sends is running its code.
if [ -e "$SECRET_FILE" ]; then
    [ -r "$SECRET_FILE" ] ||
        die "cannot read the secret file $SECRET_FILE as uid $(id -u): make it readable" \
            "by that user (compose: chmod 644 the file, or chown it to uid $(id -u);" \
            "Kubernetes: the pod's fsGroup)"
    set -- --secret-file "$SECRET_FILE" "$@"
elif [ -z "${DISTRIBUTED3_SECRET:-}" ]; then
    die "no secret: mount one at $SECRET_FILE (compose secrets:, a Kubernetes Secret)" \
        "or set DISTRIBUTED3_SECRET. Make one with:" \
        "python3 -c 'import secrets; print(secrets.token_hex(32))' > secret"
fi

case $role in
    center)
        set -- dcenter --host "${DISTRIBUTED3_HOST:-0.0.0.0}" --port "$CENTER_PORT" \
            --dashboard-host "${DISTRIBUTED3_HOST:-0.0.0.0}" \
            --dashboard-port "$CENTER_HTTP_PORT" "$@"
        ;;
    worker)
        host=$(container_ip)
        name=$(hostname)
        # --center-wait: containers start together, the center may not be up yet;
        # --death-timeout: end with the cluster (exit 0) rather than wait forever
        set -- dworker "${DISTRIBUTED3_CENTER:-center:$CENTER_PORT}" --host "$host" \
            --port "$WORKER_PORT" --http-port "$WORKER_HTTP_PORT" --name "$name" \
            --center-wait 60 --death-timeout 60 "$@"
        ;;
    *) usage ;;
esac

if [ -n "${DISTRIBUTED3_DRY_RUN:-}" ]; then
    printf '%s\n' "$@"
    exit 0
fi
printf 'distributed3 entrypoint: %s\n' "$*" >&2
exec "$@"
