# Shared by .ci/test and .ci/quickstart: installing what a fresh Debian machine lacks, timing steps.

step() { printf '\n== %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# Run a command and note how long it took (print_times lists them). No `||` here: that would turn
# off `set -e` inside shell functions run through it. For the install steps: a failure ends the run.
STEP_TIMES=()
timed() {
    local t0=$SECONDS
    "$@"
    STEP_TIMES+=("$(printf '%5ds  %.80s' $((SECONDS - t0)) "$*")")
}
# A check: run it, note its time and status, and go on with the next one, so that one run reports
# every failing check. Only for external commands and functions that check statuses themselves.
FAILED_CHECKS=()
check() {
    local t0=$SECONDS status=0
    "$@" || status=$?
    STEP_TIMES+=("$(printf '%5ds  %.80s%s' $((SECONDS - t0)) "$*" "$([ "$status" = 0 ] || echo "  FAILED ($status)")")")
    [ "$status" = 0 ] || FAILED_CHECKS+=("$*")
}
print_times() {
    step "time per step"
    printf '%s\n' "${STEP_TIMES[@]}"
}
# The end of a run of checks: exit 1 naming the failed ones, if any.
checks_done() {
    if [ ${#FAILED_CHECKS[@]} -gt 0 ]; then
        step "FAILED: ${#FAILED_CHECKS[@]} check(s)"
        printf '  %s\n' "${FAILED_CHECKS[@]}"
        exit 1
    fi
    step "OK"
}

# pytest, where "no tests collected" (exit 5) is a failure too, said plainly. A test that leaks a
# child process can keep pytest from ever exiting (its reader threads wait for the child's output),
# so the run is bounded: PYTEST_TIME_LIMIT seconds (default 900; the suite takes 3 to 7 minutes).
run_pytest() {
    local status=0 limit=${PYTEST_TIME_LIMIT:-900}
    timeout --kill-after=30 "$limit" .venv/bin/python -m pytest "$@" || status=$?
    case "$status" in
        5) echo "pytest collected no tests (exit 5): the suite is missing" >&2 ;;
        124 | 137) echo "pytest did not exit within $limit s (a test left a process or thread behind?)" >&2 ;;
    esac
    return "$status"
}

# Install the Debian packages that are missing (apt-get update only when something is).
ensure_apt_packages() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        step "installing Debian packages: ${missing[*]}"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    # Debian starts mosquitto as a service on install; our tests and demo run their own.
    if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
        as_root systemctl disable --now mosquitto.service >/dev/null 2>&1 || true
    fi
}

# Create .venv (once) and install the package into it, editable, with the given extras spec.
ensure_venv() {
    if [ ! -x .venv/bin/python ]; then
        step "creating .venv"
        python3 -m venv .venv
    fi
    step "installing $1 (uun-gateway) into .venv"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e "$1"
}
