#!/usr/bin/env bash
# Install the Debian packages the datamill test suite needs to start real servers:
#
#   postgresql    - server binaries (initdb, pg_ctl, postgres) used by tests/servers.py
#   mosquitto     - MQTT broker
#   redis-server  - Redis
#   influxdb      - InfluxDB 1.x (influxd), the time-series database of the tsdb export tests
#   victoria-metrics - VictoriaMetrics, the other time-series database of the tsdb export tests
#   openjdk-17-jre-headless - Java 17, for the Spark Connect server of the spark engine tests
#
# Idempotent and non-interactive: if every package is already present (installed
# according to dpkg, or its binaries are found) nothing is changed and apt is never
# called. Otherwise runs `apt-get update` once and installs only the missing
# packages with --no-install-recommends.
#
# Must run as root; as a normal user it re-runs itself through `sudo -n` if sudo is
# available, otherwise it prints what is missing and exits non-zero.
#
# While installing, a temporary /usr/sbin/policy-rc.d stops the packages' system
# services (the default PostgreSQL cluster, mosquitto, redis, influxdb, victoria-metrics)
# from being started: the tests start their own servers on free loopback ports. An
# existing policy-rc.d is left alone. Set DATAMILL_ALLOW_SERVICE_START=1 to skip this.
#
# Python packages are not handled here.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
PACKAGES=(postgresql mosquitto redis-server influxdb victoria-metrics openjdk-17-jre-headless)

log() { printf '[install-test-deps] %s\n' "$*"; }
die() { printf '[install-test-deps] ERROR: %s\n' "$*" >&2; exit 1; }

dpkg_installed() {
    [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]
}

# Prints the path of a PostgreSQL server binary ($1), or fails.
find_pg_binary() {
    local found
    if found="$(command -v "$1" 2>/dev/null)"; then
        printf '%s\n' "$found"
        return 0
    fi
    # Debian keeps the server binaries off PATH, one directory per major version.
    local candidates=(/usr/lib/postgresql/*/bin/"$1")
    [[ -x "${candidates[0]}" ]] || return 1
    printf '%s\n' "${candidates[@]}" | sort -V | tail -n 1
}

# Prints the path of a binary ($1), looking also in sbin directories (not on a normal
# user's PATH), or fails.
find_binary() {
    local found dir
    if found="$(command -v "$1" 2>/dev/null)"; then
        printf '%s\n' "$found"
        return 0
    fi
    for dir in /usr/sbin /usr/bin /sbin /usr/local/sbin /usr/local/bin; do
        if [[ -x "$dir/$1" ]]; then
            printf '%s\n' "$dir/$1"
            return 0
        fi
    done
    return 1
}

binaries_present() {
    case "$1" in
        postgresql)
            find_pg_binary initdb >/dev/null && find_pg_binary pg_ctl >/dev/null \
                && find_pg_binary postgres >/dev/null
            ;;
        mosquitto) find_binary mosquitto >/dev/null ;;
        redis-server) find_binary redis-server >/dev/null ;;
        influxdb) find_binary influxd >/dev/null ;;
        victoria-metrics) find_binary victoria-metrics >/dev/null ;;
        openjdk-17-jre-headless) find_binary java >/dev/null ;;
        *) return 1 ;;
    esac
}

missing=()
for pkg in "${PACKAGES[@]}"; do
    if dpkg_installed "$pkg" && binaries_present "$pkg"; then
        log "$pkg: already installed"
    elif binaries_present "$pkg"; then
        log "$pkg: not installed as a package, but its binaries are present; skipping"
    else
        missing+=("$pkg")
    fi
done

if ((${#missing[@]} == 0)); then
    log "nothing to do"
    exit 0
fi
log "missing: ${missing[*]}"

if [[ "$(id -u)" -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        log "not root; re-running through sudo -n"
        exec sudo -n env DATAMILL_ALLOW_SERVICE_START="${DATAMILL_ALLOW_SERVICE_START:-}" \
            bash "${BASH_SOURCE[0]}" "$@"
    fi
    die "not running as root and sudo is not available; install as root: apt-get install -y --no-install-recommends ${missing[*]}"
fi

command -v apt-get >/dev/null 2>&1 || die "apt-get not found; this script supports Debian/Ubuntu only"

policy_rc_d=/usr/sbin/policy-rc.d
created_policy=0
cleanup() {
    if ((created_policy)); then
        rm -f "$policy_rc_d"
        log "removed temporary $policy_rc_d"
    fi
}
trap cleanup EXIT
if [[ "${DATAMILL_ALLOW_SERVICE_START:-}" != "1" && ! -e "$policy_rc_d" ]]; then
    printf '#!/bin/sh\n# temporary, created by datamill install-test-deps.sh\nexit 101\n' >"$policy_rc_d"
    chmod 0755 "$policy_rc_d"
    created_policy=1
    log "created temporary $policy_rc_d so no system services are started"
fi

apt_opts=(-y -q -o DPkg::Lock::Timeout=300)
log "running: apt-get update"
apt-get "${apt_opts[@]}" update
log "running: apt-get install --no-install-recommends ${missing[*]}"
apt-get "${apt_opts[@]}" install --no-install-recommends "${missing[@]}"

failed=()
for pkg in "${missing[@]}"; do
    if binaries_present "$pkg"; then
        log "$pkg: installed"
    else
        failed+=("$pkg")
    fi
done
((${#failed[@]} == 0)) || die "installed, but binaries still not found for: ${failed[*]}"
log "done"
