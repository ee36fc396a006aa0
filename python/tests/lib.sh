# Sourced by the front end's shell tests: a free loopback port, and a hecate-controller started
# for the test (its address in HECATE_CONTROLLER; stopped when the test exits).
free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start_controller() {
  exec 3< <(exec "$R/controller/hecate-controller" --listen=127.0.0.1:0 --metrics_listen= \
    --state_dir="$TEST_TMPDIR/state" 2>"$TEST_TMPDIR/controller.err")
  CONTROLLER_PID=$!
  trap 'kill $CONTROLLER_PID 2>/dev/null || true' EXIT
  local line
  read -r -t 60 line <&3 || { cat "$TEST_TMPDIR/controller.err"; exit 1; }
  export HECATE_CONTROLLER=${line##*listening on }
}
