#!/usr/bin/env bash
# End-to-end smoke test of the container deployment (Dockerfile + docker-compose.yml).
#
#   scripts/compose_smoke.sh
#
# 1. builds the image; checks it runs as non-root and has no compiler; prints its size
# 2. starts the stack under a throwaway project name, on free host ports, with
#    a throwaway inbox, and waits until every service answers the health check
#    its container is configured with
# 3. asserts the classifier reports NOT_SERVING while there is no champion
# 4. materialises the asset graph on the mounted SMS corpus
#    (`spam-platform ingest /data/SMSSpamCollection` inside dagster-code) and
#    checks the runs are in the PostgreSQL instance, seen from another container
# 5. classifies two messages through the published gRPC port and checks the
#    model version reported is the registry's champion
# 6. makes the classifier exit from inside its container and checks the restart
#    policy brings the same container back to SERVING, and that the verdicts of
#    step 5 are in the prediction log on the shared volume, read from dagster-code
# 7. drops a batch into the inbox on the host and waits for the inbox sensor's
#    run to succeed (SMOKE_INBOX=0 skips this)
# 8. drops another batch and, while a run is in progress, stops dagster-code
#    (where runs execute), then the rest (`docker compose stop`, what `down`
#    does before removing): times both, checks no container needed SIGKILL
#    (exit status 137) and that no run was left STARTED, holding its pool slot
# and always tears the stack down, volumes included (SMOKE_KEEP=1 leaves it up).
#
# The image is built the way the README builds it: with podman that is the OCI
# format, which drops the Dockerfile's HEALTHCHECK, so every health check used
# here comes from docker-compose.yml.
#
# Works with `docker compose` and with podman through a `docker` shim
# (../shared/container/setup.sh). Needs the SMS Spam Collection in
# $SPAM_DATASETS (default ../shared/datasets). Uses .env when there is one
# (its values win over the smoke's choices, as podman-compose gives .env
# precedence), else writes a temporary one from .env.example with random secrets.
set -euo pipefail

cd "$(dirname "$0")/.."
PROJECT=${SMOKE_PROJECT:-spamsmoke$$}
STARTED="" CREATED_ENV="" SMOKE_OWNS_INBOX="" SPAM_INBOX=""
TIMEOUT=${SMOKE_TIMEOUT:-300}        # seconds for each wait
STOPPED=""
T0=$(date +%s)

say() { printf '\n== %s\n' "$*"; }
fail() { printf '\nSMOKE FAILED: %s\n' "$*" >&2; exit 1; }
now() { date +%s; }

command -v docker >/dev/null || fail "no docker command (on this machine: run ../shared/container/setup.sh first)"
docker info >/dev/null 2>&1 || fail "the container engine does not answer (docker info)"

compose() { docker compose -p "$PROJECT" "$@"; }
cid() { docker ps -aq --filter "label=com.docker.compose.project=$PROJECT" --filter "label=com.docker.compose.service=$1" | head -n 1; }

dump_logs() {
  for svc in postgres mlflow dagster-code dagster-webserver dagster-daemon serving; do
    id=$(cid "$svc") || true
    [ -n "$id" ] || continue
    printf '\n---- logs: %s (last 40 lines)\n' "$svc"
    docker logs --tail 40 "$id" 2>&1 | cut -c1-300 || true
  done
}

cleanup() {
  local rc=$?
  if [ "$rc" -ne 0 ]; then dump_logs; fi
  if [ "${SMOKE_KEEP:-0}" = 1 ]; then
    echo "SMOKE_KEEP=1: leaving project $PROJECT up (docker compose -p $PROJECT down -v to remove)"
  else
    if [ -n "$STARTED" ]; then
      say "tearing down project $PROJECT"
      t=$(now)
      compose down -v >/dev/null 2>&1 || echo "warning: compose down failed" >&2
      echo "  compose down -v in $(( $(now) - t ))s${STOPPED:+ (containers already stopped)}"
    fi
    [ -n "$CREATED_ENV" ] && rm -f "$CREATED_ENV"
    [ -n "$SMOKE_OWNS_INBOX" ] && rm -rf "$SPAM_INBOX" 2>/dev/null
  fi
  if [ "$rc" -eq 0 ]; then echo "container smoke: PASSED in $(( $(now) - T0 )) s"; else echo "container smoke: FAILED" >&2; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- configuration: .env, or a temporary one --------------------------------
if [ ! -f .env ]; then
  python3 - <<'PY' || fail "cannot write .env from .env.example"
import re, secrets
text = open(".env.example").read()
text = re.sub(r"(?m)^(POSTGRES_PASSWORD|SPAM_SERVING_TOKEN)=change-me$",
              lambda m: f"{m.group(1)}={secrets.token_urlsafe(18)}", text)
open(".env", "w").write(text)
PY
  CREATED_ENV=.env
  echo "wrote a temporary .env from .env.example (random secrets); removed at the end"
fi
dotenv() { sed -n "s/^$1=//p" .env | tail -n 1 | sed -e 's/^"\(.*\)"$/\1/' -e "s/^'\(.*\)'$/\1/"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

export HOST_BIND=127.0.0.1
for var in DAGSTER_UI_PORT MLFLOW_UI_PORT SERVING_PORT SERVING_METRICS_PORT; do
  value=$(dotenv "$var"); export "$var=${value:-$(free_port)}"
done
if [ -n "$(dotenv SPAM_INBOX)" ]; then
  SPAM_INBOX=$(dotenv SPAM_INBOX)
else
  SPAM_INBOX=$(mktemp -d "${TMPDIR:-/tmp}/spam-smoke-inbox.XXXXXX"); SMOKE_OWNS_INBOX=1
  chmod 0777 "$SPAM_INBOX"          # the containers run as uid 10001
fi
export SPAM_INBOX
export SPAM_DATASETS=${SPAM_DATASETS:-$(dotenv SPAM_DATASETS)}
export SPAM_DATASETS=${SPAM_DATASETS:-../shared/datasets}
[ -f "$SPAM_DATASETS/SMSSpamCollection" ] || fail "no SMS corpus at $SPAM_DATASETS/SMSSpamCollection (set SPAM_DATASETS)"
IMAGE=$(dotenv SPAM_IMAGE); export SPAM_IMAGE=${IMAGE:-${SPAM_IMAGE:-spam-platform:local}}
TOKEN=$(dotenv SPAM_SERVING_TOKEN)
[ -n "$TOKEN" ] || fail ".env has no SPAM_SERVING_TOKEN"

# health of one service: the output of the health check its container is
# configured with (docker-compose.yml), run inside it as the engine would run it,
# so the smoke test also proves each check asks its own service. (Run by hand:
# podman runs health checks from systemd timers, which this machine may lack.)
health() {
  local id; id=$(cid "$1"); [ -n "$id" ] || { echo "no container"; return 1; }
  if [ "$1" = postgres ]; then docker exec "$id" pg_isready -h 127.0.0.1 -q && echo "postgres: accepting connections"; return; fi
  local test; test=$(docker inspect --format '{{json .Config.Healthcheck.Test}}' "$id") || return 1
  # ["CMD-SHELL", "cmd"] or ["CMD", "arg", ...]: one argument per line
  mapfile -t argv < <(printf '%s' "$test" | python3 -c '
import json, sys
test = json.load(sys.stdin) or []
kind, rest = (test[0], test[1:]) if test else ("NONE", [])
sys.stdout.write("\n".join(["/bin/sh", "-c", rest[0]] if kind == "CMD-SHELL" else rest if kind == "CMD" else []))')
  [ "${#argv[@]}" -gt 0 ] || { echo "no health check configured: $test"; return 1; }
  docker exec "$id" "${argv[@]}" 2>&1
}

# wait until `health SERVICE` prints something matching PATTERN
wait_health() {
  local svc=$1 pattern=$2 deadline=$(( $(now) + TIMEOUT )) out=""
  while [ "$(now)" -lt "$deadline" ]; do
    out=$(health "$svc" | tail -n 1) || true
    if printf '%s' "$out" | grep -Eq "$pattern"; then echo "  $svc: $out"; return 0; fi
    sleep 2
  done
  fail "$svc did not reach '$pattern' within ${TIMEOUT}s (last: $out)"
}

# classify through the published port, from a client container on the host's network
classify() {
  docker run --rm --no-healthcheck --network host -e SPAM_SERVING_TOKEN="$TOKEN" "$SPAM_IMAGE" \
    spam-classify --quiet --target "127.0.0.1:$SERVING_PORT" "$@"
}

# --- 1. image ------------------------------------------------------------------
say "building $SPAM_IMAGE"
t=$(now)
docker build -t "$SPAM_IMAGE" . > "${TMPDIR:-/tmp}/spam-smoke-build-$PROJECT.log" 2>&1 \
  || { tail -n 40 "${TMPDIR:-/tmp}/spam-smoke-build-$PROJECT.log"; fail "image build failed"; }
BUILD_S=$(( $(now) - t ))
rm -f "${TMPDIR:-/tmp}/spam-smoke-build-$PROJECT.log"
SIZE_B=$(docker image inspect --format '{{.Size}}' "$SPAM_IMAGE")
SIZE_MB=$(( SIZE_B / 1000000 ))
echo "  built in ${BUILD_S}s, size ${SIZE_MB} MB"
# Podman's default (OCI) format has no place for HEALTHCHECK; compose declares every check.
echo "  HEALTHCHECK kept in the image: $(docker image inspect --format '{{if .Config.Healthcheck}}yes{{else}}no (OCI format){{end}}' "$SPAM_IMAGE" 2>/dev/null || echo unknown)"
uid=$(docker run --rm --no-healthcheck "$SPAM_IMAGE" id -u)
[ "$uid" != 0 ] || fail "the image runs as root"
echo "  runs as uid $uid"
compilers=$(docker run --rm --no-healthcheck "$SPAM_IMAGE" sh -c 'command -v gcc cc c++ clang || echo none')
[ "$compilers" = none ] || fail "the runtime image contains a compiler: $compilers"
echo "  compilers: none"
# Every requirement of pyproject.toml (dependencies + the deploy extra) installed at its pin: a
# builder that reuses a stale dependency layer (buildah did) fails here, not at a service's start.
wanted=$(python3 -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print(' '.join(p['dependencies'] + p.get('optional-dependencies', {}).get('deploy', [])))")
# shellcheck disable=SC2086 # one argument per requirement
missing=$(docker run --rm --no-healthcheck --entrypoint python "$SPAM_IMAGE" -c '
import sys
from importlib.metadata import PackageNotFoundError, version
from packaging.requirements import Requirement
for line in sys.argv[1:]:
    r = Requirement(line)
    try:
        if version(r.name) not in r.specifier:
            print(f"{r.name} {version(r.name)} (wants {r.specifier})")
    except PackageNotFoundError:
        print(f"{r.name} (not installed)")
' $wanted) || fail "could not list the image's packages: $missing"
[ -z "$missing" ] || fail "the image lacks what pyproject.toml requires: $missing"
echo "  every requirement of pyproject.toml installed at its pin ($(wc -w <<< "$wanted"))"

# --- 2. stack ------------------------------------------------------------------
say "starting project $PROJECT (UI :$DAGSTER_UI_PORT, MLflow :$MLFLOW_UI_PORT, gRPC :$SERVING_PORT, inbox $SPAM_INBOX)"
t=$(now)
STARTED=1
compose up -d > "${TMPDIR:-/tmp}/spam-smoke-up-$PROJECT.log" 2>&1 \
  || { tail -n 40 "${TMPDIR:-/tmp}/spam-smoke-up-$PROJECT.log"; fail "compose up failed"; }
rm -f "${TMPDIR:-/tmp}/spam-smoke-up-$PROJECT.log"
wait_health postgres 'accepting'
wait_health mlflow 'HTTP 200'
wait_health dagster-code ': SERVING$'
wait_health dagster-webserver 'HTTP 200'
wait_health dagster-daemon 'Daemon live'
# --- 3. no champion yet: up, but NOT_SERVING -----------------------------------
wait_health serving ': (NOT_SERVING|SERVING)$'
UP_S=$(( $(now) - t ))
[ "$(health serving | tail -n 1)" = "serving: NOT_SERVING" ] || fail "serving is not NOT_SERVING before any champion exists"
echo "  stack healthy in ${UP_S}s; the classifier reports NOT_SERVING (no champion yet)"

# --- 4. materialise the graph ---------------------------------------------------
say "materialising the asset graph on /data/SMSSpamCollection"
t=$(now)
ingest_log="${TMPDIR:-/tmp}/spam-smoke-ingest-$PROJECT.log"
docker exec "$(cid dagster-code)" spam-platform ingest /data/SMSSpamCollection > "$ingest_log" 2>&1 \
  || { tail -n 60 "$ingest_log"; echo "---- errors:"; grep -E 'Error|Exception|FAILED|failed' "$ingest_log" | tail -n 15
       rm -f "$ingest_log"; fail "spam-platform ingest failed"; }
INGEST_S=$(( $(now) - t ))
grep -E '^(batch |graph |  check failed)' "$ingest_log" || true
rm -f "$ingest_log"
status=$(docker exec "$(cid dagster-code)" spam-platform status 2>/dev/null)
echo "$status"
CHAMPION=$(printf '%s\n' "$status" | sed -n 's/^ *champion: v\([0-9][0-9]*\) .*/\1/p')
[ -n "$CHAMPION" ] || fail "no champion after materialising the graph"
echo "  graph materialised in ${INGEST_S}s; champion v$CHAMPION"
# the runs are in the PostgreSQL instance: read them from another container
runs=$(docker exec "$(cid dagster-webserver)" python -c '
import dagster as dg
from dagster._core.storage.dagster_run import DagsterRunStatus
with dg.DagsterInstance.get() as instance:
    runs = instance.get_runs()
    ok = [r for r in runs if r.status == DagsterRunStatus.SUCCESS]
    print(type(instance.run_storage).__name__, len(ok), len(runs))
' 2>/dev/null | tail -n 1)
echo "  instance seen from dagster-webserver: $runs (storage, successful runs, runs)"
case "$runs" in PostgresRunStorage\ [1-9]*) ;; *) fail "the runs are not in the PostgreSQL instance: $runs";; esac

# --- 5. classify through the published port ------------------------------------
say "classifying through 127.0.0.1:$SERVING_PORT"
t=$(now)
wait_health serving ': SERVING$'
SERVE_S=$(( $(now) - t ))
check_verdicts() {
  local out; out=$(classify "WINNER!! You have been selected for a free prize. Call 09061701461 now to claim" \
                            "are we still on for lunch tomorrow?") || fail "spam-classify failed: $out"
  echo "$out"
  printf '%s\n' "$out" | python3 -c '
import json, sys
want = sys.argv[1]
rows = [json.loads(line) for line in sys.stdin if line.strip()]
assert [r.get("label") for r in rows] == ["spam", "ham"], f"unexpected labels: {rows}"
versions = {r["model_version"] for r in rows}
assert versions == {want}, f"model_version {versions} is not the champion v{want}"
' "$CHAMPION" || fail "wrong verdicts"
}
check_verdicts
echo "  SERVING ${SERVE_S}s after the graph finished; verdicts from champion v$CHAMPION"
if docker run --rm --no-healthcheck --network host "$SPAM_IMAGE" \
     spam-classify --quiet --target "127.0.0.1:$SERVING_PORT" "no token" >/dev/null 2>&1; then
  fail "a call without the bearer token was answered"
fi
echo "  a call without the bearer token is refused"

# --- 6. the process exits by itself: the restart policy brings it back ----------
say "stopping spam-serve from inside its container (SIGTERM to PID 1)"
SERVING_ID=$(cid serving)
before=$(docker inspect --format '{{.RestartCount}} {{.State.StartedAt}}' "$SERVING_ID")
t=$(now)
docker exec "$SERVING_ID" python -c 'import os, signal; os.kill(1, signal.SIGTERM)'
deadline=$(( $(now) + TIMEOUT ))
until [ "$(docker inspect --format '{{.RestartCount}} {{.State.StartedAt}}' "$SERVING_ID")" != "$before" ]; do
  [ "$(now)" -lt "$deadline" ] || fail "serving was not restarted (still: $before)"
  sleep 1
done
wait_health serving ': SERVING$'
RESTART_S=$(( $(now) - t ))
[ "$(cid serving)" = "$SERVING_ID" ] || fail "serving came back as a different container"
echo "  restarted by its policy (restarts: $(docker inspect --format '{{.RestartCount}}' "$SERVING_ID")), SERVING again in ${RESTART_S}s"
check_verdicts
# The stop published the log segment holding the first two verdicts; the graph's side of the
# shared platform-home volume reads it.
logged=$(docker exec "$(cid dagster-code)" python -c '
import sys
from spam_assets.traffic.prediction_files import read_predictions  # the traffic contract: the graph reads the log
frame = read_predictions("/var/lib/spam/predictions")
frame = frame[frame["model_version"] == sys.argv[1]]
print(len(frame), " ".join(sorted(set(frame["label"]))))
' "$CHAMPION" 2>&1 | tail -n 1) || fail "could not read the prediction log from dagster-code: $logged"
case "$logged" in
  [2-9]*" ham spam"|[1-9][0-9]*" ham spam") echo "  prediction log, read from dagster-code: $logged (verdicts, labels)";;
  *) fail "the prediction log on the shared volume lacks the verdicts given: $logged";;
esac

# --- 7. the inbox drives the loop -------------------------------------------------
INBOX_S="skipped"
if [ "${SMOKE_INBOX:-1}" = 1 ] && [ -n "$SMOKE_OWNS_INBOX" ]; then
  say "dropping a batch into the inbox on the host ($SPAM_INBOX)"
  t=$(now)
  head -n 1500 "$SPAM_DATASETS/SMSSpamCollection" > "$SPAM_INBOX/.smoke-batch.part"
  mv "$SPAM_INBOX/.smoke-batch.part" "$SPAM_INBOX/smoke-batch.txt"
  deadline=$(( $(now) + TIMEOUT )); result=""
  while [ "$(now)" -lt "$deadline" ]; do
    result=$(docker exec "$(cid dagster-code)" python -c '
import dagster as dg
with dg.DagsterInstance.get() as instance:
    runs = [r for r in instance.get_runs(limit=50) if r.tags.get("spam/inbox_file") == "smoke-batch.txt"]
    print(runs[0].status.value if runs else "none")
' 2>/dev/null | tail -n 1) || true
    case "$result" in FAILURE|CANCELED) break ;; esac
    # the sensor moves the file to processed/ on a tick after its run succeeded
    [ "$result" = SUCCESS ] && [ -f "$SPAM_INBOX/processed/smoke-batch.txt" ] && break
    sleep 3
  done
  [ "$result" = SUCCESS ] || fail "the inbox run did not succeed (status: ${result:-none})"
  [ -f "$SPAM_INBOX/processed/smoke-batch.txt" ] || fail "the inbox file was not moved to processed/ within ${TIMEOUT}s"
  INBOX_S="$(( $(now) - t ))s"
  echo "  inbox_sensor picked it up, its run succeeded and the file is in processed/ (${INBOX_S})"
fi

# --- 8. stop the stack while a run is in progress ---------------------------------
# The runs execute inside dagster-code. It is stopped first, while one runs, then
# the rest; none may need SIGKILL, and no run may be left in progress.
in_progress_py='
import sys, time, dagster as dg
from dagster._core.storage.dagster_run import IN_PROGRESS_RUN_STATUSES
deadline = time.monotonic() + float(sys.argv[1])
with dg.DagsterInstance.get() as instance:
    while True:
        runs = [r for r in instance.get_runs(limit=50) if r.status in IN_PROGRESS_RUN_STATUSES]
        started = [r for r in runs if r.status.value == "STARTED"]
        # the refresh run that follows the inbox run trains; the inbox run itself is short
        if any("spam/inbox_file" not in r.tags for r in started) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    print(" ".join(r.run_id for r in runs))
'
statuses_py='
import sys, dagster as dg
with dg.DagsterInstance.get() as instance:
    print(" ".join(f"{i[:8]}:{instance.get_run_by_id(i).status.value}" for i in sys.argv[1:]))
'
STOP_CODE_S="skipped" STOP_REST_S="skipped" STOP_RUNS="skipped"
secs() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}s')" "$1" "$(date +%s.%N)"; }
if [ "${SMOKE_INBOX:-1}" = 1 ] && [ -n "$SMOKE_OWNS_INBOX" ]; then
  say "stopping the stack while a run is in progress"
  sed -n '1501,3000p' "$SPAM_DATASETS/SMSSpamCollection" > "$SPAM_INBOX/.smoke-stop.part"
  mv "$SPAM_INBOX/.smoke-stop.part" "$SPAM_INBOX/smoke-stop.txt"
  runs=$(docker exec "$(cid dagster-code)" python -c "$in_progress_py" "$TIMEOUT" 2>/dev/null | tail -n 1) || true
  [ -n "$runs" ] || echo "  warning: no run was in progress when dagster-code stopped"
  t=$(date +%s.%N)
  docker stop "$(cid dagster-code)" >/dev/null 2>&1 || fail "docker stop dagster-code failed"
  STOP_CODE_S=$(secs "$t")
  t=$(date +%s.%N)
  compose stop >/dev/null 2>&1 || fail "compose stop failed"
  STOP_REST_S=$(secs "$t")
  STOPPED=1
  killed=""
  for svc in dagster-code serving dagster-daemon dagster-webserver mlflow postgres; do
    code=$(docker inspect --format '{{.State.ExitCode}}' "$(cid "$svc")")
    # 137 from the entrypoint's own deadline (SPAM_STOP_TIMEOUT, which names what it killed) is
    # bounded and said; 137 without it is the engine's SIGKILL.
    own=$(docker logs --tail 20 "$(cid "$svc")" 2>&1 | grep -o 'still running .* after SIGTERM, killed: .*' | tail -n 1) || true
    echo "  $svc exited with status $code${own:+ (its entrypoint: $own)}"
    [ "$code" != 137 ] || [ -n "$own" ] || killed="$killed $svc"
  done
  [ -z "$killed" ] || fail "the engine had to SIGKILL:$killed"
  echo "  dagster-code stopped in $STOP_CODE_S with $(wc -w <<< "$runs") run(s) in progress, the rest in $STOP_REST_S; the engine killed nothing"
  if [ -n "$runs" ]; then
    # read those runs' final status from the instance: postgres and a Dagster container, started again
    docker start "$(cid postgres)" >/dev/null
    docker start "$(cid dagster-webserver)" >/dev/null
    wait_health postgres 'accepting'
    deadline=$(( $(now) + 60 )); STOP_RUNS=""
    until [ -n "$STOP_RUNS" ] || [ "$(now)" -ge "$deadline" ]; do
      # shellcheck disable=SC2086 # one argument per run id
      STOP_RUNS=$(docker exec "$(cid dagster-webserver)" python -c "$statuses_py" $runs 2>/dev/null | tail -n 1) || true
      [ -n "$STOP_RUNS" ] || sleep 2
    done
    [ -n "$STOP_RUNS" ] || fail "could not read the interrupted runs' status"
    # A run STARTED (its worker was running) must have failed on the way down: one left STARTED
    # held its pool slot for good. A run still being launched (STARTING) or waiting (QUEUED) when the
    # code server went away is the daemon's to settle when the stack is back: run monitoring fails
    # a STARTING run past start_timeout_seconds, the queue runs a QUEUED one.
    case " $STOP_RUNS" in *:STARTED*|*:CANCELING*) fail "a run was left in progress: $STOP_RUNS";; esac
    echo "  the runs that were in progress, after the stop: $STOP_RUNS"
    case " $STOP_RUNS" in *:STARTING*|*:NOT_STARTED*|*:QUEUED*)
      t=$(now)
      docker start "$(cid dagster-code)" >/dev/null
      docker start "$(cid dagster-daemon)" >/dev/null
      deadline=$(( $(now) + TIMEOUT ))
      while :; do
        # shellcheck disable=SC2086 # one argument per run id
        STOP_RUNS=$(docker exec "$(cid dagster-webserver)" python -c "$statuses_py" $runs 2>/dev/null | tail -n 1) || true
        case " $STOP_RUNS" in *:STARTED*|*:STARTING*|*:CANCELING*|*:NOT_STARTED*|*:QUEUED*|" ") ;; *) break;; esac
        [ "$(now)" -lt "$deadline" ] || fail "runs still in progress ${TIMEOUT}s after the stack came back: $STOP_RUNS"
        sleep 3
      done
      echo "  settled by the daemon $(( $(now) - t ))s after dagster-code and the daemon started again: $STOP_RUNS"
      ;;
    esac
    compose stop >/dev/null 2>&1 || true
  fi
fi

say "timings"
printf '  %-44s %s\n' \
  "image build" "${BUILD_S}s" \
  "image size" "${SIZE_MB} MB" \
  "stack start to healthy (serving NOT_SERVING)" "${UP_S}s" \
  "graph materialised (spam-platform ingest)" "${INGEST_S}s" \
  "graph done to classifier SERVING" "${SERVE_S}s" \
  "exit inside container to SERVING again" "${RESTART_S}s" \
  "inbox drop to successful run" "${INBOX_S}" \
  "docker stop dagster-code, a run in progress" "${STOP_CODE_S}" \
  "compose stop, the other five services" "${STOP_REST_S}" \
  "the runs in progress afterwards" "${STOP_RUNS}"
