# Shared by .ci/test and .ci/quickstart: installing what a fresh Debian machine lacks, timing steps.

step() { printf '\n== %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# Run a command and note how long it took (print_times lists them). No `||` here: that would turn
# off `set -e` inside shell functions run through it.
STEP_TIMES=()
timed() {
    local t0=$SECONDS
    "$@"
    STEP_TIMES+=("$(printf '%5ds  %s' $((SECONDS - t0)) "$*")")
}
print_times() {
    step "time per step"
    printf '%s\n' "${STEP_TIMES[@]}"
}

# pytest, where "no tests collected" (exit 5) is a failure too, said plainly.
run_pytest() {
    local status=0
    .venv/bin/python -m pytest "$@" || status=$?
    if [ "$status" = 5 ]; then
        echo "pytest collected no tests (exit 5): the suite is missing" >&2
    fi
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
