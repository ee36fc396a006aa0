#!/usr/bin/env bash
# The Python stubs of gRPC's health and reflection protocols import next to grpcio from
# /usr/bin/python3 (they live under hecate_grpc/, not grpc/, which would shadow grpcio), and work
# against a live controller: health reports SERVING, reflection lists the services.
set -euo pipefail
R="$TEST_SRCDIR/$TEST_WORKSPACE"
export PYTHONPATH="$R/proto"
exec 3< <(exec "$R/controller/hecate-controller" --listen=127.0.0.1:0 --metrics-listen= \
  --state-dir="$TEST_TMPDIR/state" 2>"$TEST_TMPDIR/controller.log")
CTRL=$!
trap 'kill $CTRL 2>/dev/null || true' EXIT
read -r -t 30 line <&3; ADDR=${line#listening on }
/usr/bin/python3 - "$ADDR" <<'PY'
import sys
import grpc
from hecate_grpc.health.v1 import health_pb2, health_pb2_grpc
from hecate_grpc.reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

assert hasattr(grpc, "insecure_channel"), "grpc is grpcio"
channel = grpc.insecure_channel(sys.argv[1])
grpc.channel_ready_future(channel).result(timeout=30)
health = health_pb2_grpc.HealthStub(channel)
status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10).status
assert status == health_pb2.HealthCheckResponse.SERVING, status
reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
responses = reflection.ServerReflectionInfo(
    iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
names = sorted(s.name for r in responses for s in r.list_services_response.service)
print("services:", names)
assert "grpc.health.v1.Health" in names, names
assert any(n.startswith("hecate.v1.") for n in names), names
PY
echo "python health and reflection OK"

# The Python client over TLS with a bearer token: the operator's token reads the status, an
# unknown one is UNAUTHENTICATED.
bash "$R/tests/certs/make_test_certs.sh" "$TEST_TMPDIR/certs"
C="$TEST_TMPDIR/certs"
printf 'op-token-%s\n' "$RANDOM$RANDOM" > "$TEST_TMPDIR/op.token"
echo "operator $(tr -d '\n' < "$TEST_TMPDIR/op.token" | sha256sum | cut -d' ' -f1)" > "$TEST_TMPDIR/tokens"
echo "not-a-token" > "$TEST_TMPDIR/bad.token"
exec 4< <(exec "$R/controller/hecate-controller" --listen=127.0.0.1:0 --metrics-listen= \
  --state-dir="$TEST_TMPDIR/state_tls" --tls_cert_file="$C/server.crt" --tls_key_file="$C/server.key" \
  --tokens_file="$TEST_TMPDIR/tokens" 2>"$TEST_TMPDIR/controller_tls.log")
CTRL_TLS=$!
trap 'kill $CTRL $CTRL_TLS 2>/dev/null || true' EXIT
read -r -t 30 line <&4; TLS_ADDR=${line#listening on }
CLIENT="$R/clients/python/hecate_client.py"
/usr/bin/python3 "$CLIENT" --controller "$TLS_ADDR" --tls-ca-file "$C/ca.crt" \
  --token-file "$TEST_TMPDIR/op.token" status > "$TEST_TMPDIR/status.json"
grep -q '"serving": true' "$TEST_TMPDIR/status.json"
if /usr/bin/python3 "$CLIENT" --controller "$TLS_ADDR" --tls-ca-file "$C/ca.crt" \
    --token-file "$TEST_TMPDIR/bad.token" status 2>"$TEST_TMPDIR/bad.err"; then
  echo "an unknown token was accepted" >&2; exit 1
fi
grep -q UNAUTHENTICATED "$TEST_TMPDIR/bad.err"
if grep -q "op-token" "$TEST_TMPDIR/controller_tls.log"; then
  echo "a token reached the controller's log" >&2; exit 1
fi
echo "python client over TLS with tokens OK"
