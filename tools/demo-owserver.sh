#!/bin/sh
# Demo owserver for the uun-gateway quick start: emulated 1-Wire sensors on 127.0.0.1:4304.
#
#   tools/demo-owserver.sh [start|stop|status]
#
# start  installs Debian's owserver if it is missing (apt-get, via sudo when not root), then
#        starts it as a background daemon bound to loopback only, with deterministic emulated
#        devices (--tester): two DS18B20, a DS18S20, a DS2438 and a DS2423 counter. If something
#        already answers on 127.0.0.1:4304 (for example Debian's own owserver.socket, which serves
#        the fake devices of /etc/owfs.conf), it is left alone and used as is.
# stop   stops the daemon this script started (by its pid file; never anything else).
# status says whether 127.0.0.1:4304 answers.
#
# Environment: OWSERVER_DEMO_PORT (default 4304), OWSERVER_DEMO_DEVICES (default 28,28,10,26,1D).
set -eu

PORT="${OWSERVER_DEMO_PORT:-4304}"
DEVICES="${OWSERVER_DEMO_DEVICES:-28,28,10,26,1D}"
PIDFILE="${XDG_RUNTIME_DIR:-/tmp}/uun-gateway-demo-owserver-${PORT}.pid"

port_open() {
    # python3 is always there for uun-gateway; plain sh has no TCP probe
    python3 - "$PORT" <<'EOF'
import socket, sys
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close()
except OSError:
    sys.exit(1)
EOF
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "demo-owserver: need root to run: $*" >&2
        exit 1
    fi
}

install_owserver() {
    if command -v owserver >/dev/null 2>&1 || [ -x /usr/bin/owserver ]; then
        return
    fi
    echo "demo-owserver: installing Debian package owserver"
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends owserver
}

start() {
    if port_open; then
        echo "demo-owserver: an owserver already answers on 127.0.0.1:$PORT; using it"
        if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet owserver.socket 2>/dev/null; then
            echo "demo-owserver: (Debian's owserver.socket: fake devices from /etc/owfs.conf)"
        fi
        return 0
    fi
    install_owserver
    if port_open; then  # installing may have started Debian's socket-activated owserver
        echo "demo-owserver: Debian's owserver now answers on 127.0.0.1:$PORT; using it"
        return 0
    fi
    owbin="$(command -v owserver || echo /usr/bin/owserver)"
    "$owbin" --background --pid_file "$PIDFILE" --error_print=1 --error_level=0 \
        -p "127.0.0.1:$PORT" --tester="$DEVICES"
    tries=0
    until port_open; do
        tries=$((tries + 1))
        if [ "$tries" -ge 50 ]; then
            echo "demo-owserver: owserver did not come up on 127.0.0.1:$PORT" >&2
            exit 1
        fi
        sleep 0.1
    done
    echo "demo-owserver: owserver (pid $(cat "$PIDFILE" 2>/dev/null || echo '?')) serves emulated" \
        "devices $DEVICES on 127.0.0.1:$PORT"
}

stop() {
    if [ ! -f "$PIDFILE" ]; then
        echo "demo-owserver: not started by this script (no $PIDFILE)"
        return 0
    fi
    pid="$(cat "$PIDFILE")"
    rm -f "$PIDFILE"
    if kill "$pid" 2>/dev/null; then
        tries=0
        while port_open && [ "$tries" -lt 30 ]; do
            tries=$((tries + 1))
            sleep 0.1
        done
        echo "demo-owserver: stopped owserver pid $pid"
    fi
}

case "${1:-start}" in
    start) start ;;
    stop) stop ;;
    status)
        if port_open; then echo "demo-owserver: 127.0.0.1:$PORT answers"; else
            echo "demo-owserver: nothing on 127.0.0.1:$PORT"
            exit 1
        fi
        ;;
    *)
        echo "usage: $0 [start|stop|status]" >&2
        exit 2
        ;;
esac
