#!/usr/bin/env bash
# Team MLflow tracking server: runs, params, metrics and tags in PostgreSQL (a private cluster kept in a
# folder), artifacts proxied by the server into a shared folder. Runs in the foreground; Ctrl-C (or
# SIGTERM) stops the server and the database. Clients point at it with
#     export MLFLOW_TRACKING_URI=http://<this host>:<port>
#
#   scripts/tracking-server.sh                       # or: make tracking-server
#
# Settings (environment):
#   PIXELZOO_SERVER_DIR  state folder: PostgreSQL cluster + logs      (default .work/tracking-server)
#   PIXELZOO_ARTIFACTS   shared artifact folder the server writes to  (default $PIXELZOO_SERVER_DIR/artifacts)
#   MLFLOW_HOST          address the server listens on                 (default 127.0.0.1; 0.0.0.0 for a team)
#   MLFLOW_PORT          its port                                      (default 5000)
#   MLFLOW_ALLOWED_HOSTS Host headers MLflow accepts when reached by name (e.g. gpu-box:5000,gpu-box)
#   MLFLOW_WORKERS       server worker processes                       (default 2)
#   PG_PORT              PostgreSQL port on 127.0.0.1                  (default: a free one)
#   PG_BIN               PostgreSQL server binaries (default: newest /usr/lib/postgresql/*/bin)
#   PYTHON               interpreter with mlflow and psycopg2 (pip install -e '.[team]')  (default python)
# PostgreSQL listens on 127.0.0.1 only and trusts local connections: only the MLflow server, on the same
# host, talks to it. Run as root, the database runs as the unprivileged user `postgres`.
set -euo pipefail

DIR=$(realpath -m "${PIXELZOO_SERVER_DIR:-.work/tracking-server}")
ARTIFACTS=$(realpath -m "${PIXELZOO_ARTIFACTS:-$DIR/artifacts}")
HOST=${MLFLOW_HOST:-127.0.0.1}
PORT=${MLFLOW_PORT:-5000}
PY=${PYTHON:-python}
PGDATA="$DIR/postgres"

die() { echo "tracking-server: $*" >&2; exit 1; }

if [[ -z "${PG_BIN:-}" ]]; then
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
fi
[[ -n "$PG_BIN" && -x "$PG_BIN/initdb" ]] \
    || die "PostgreSQL server binaries not found (looked in ${PG_BIN:-/usr/lib/postgresql/*/bin}):" \
           "apt-get install postgresql (ci/system-deps.sh does), or set PG_BIN"
"$PY" -c "import mlflow, psycopg2" 2>/dev/null \
    || die "$PY lacks mlflow or psycopg2: pip install -e '.[team]' (or set PYTHON)"

# initdb/postgres refuse to run as root: then the cluster belongs to the system user `postgres`.
AS=()
if [[ $(id -u) == 0 ]]; then
    id postgres >/dev/null 2>&1 || die "running as root needs the unprivileged user 'postgres' (Debian's postgresql package creates it)"
    AS=(runuser -u postgres --)
fi
mkdir -p "$DIR" "$ARTIFACTS"
if [[ ${#AS[@]} -gt 0 ]]; then
    install -d -o postgres -m 700 "$PGDATA"
    "${AS[@]}" test -w "$PGDATA" || die "user 'postgres' cannot reach $PGDATA: choose a PIXELZOO_SERVER_DIR whose parent folders it may enter"
else
    install -d -m 700 "$PGDATA"
fi

if [[ ! -f "$PGDATA/PG_VERSION" ]]; then
    echo "tracking-server: new PostgreSQL cluster in $PGDATA"
    "${AS[@]}" "$PG_BIN/initdb" -D "$PGDATA" -U mlflow -E UTF8 --auth=trust --no-instructions >"$DIR/initdb.log" \
        || die "initdb failed, see $DIR/initdb.log"
fi

if [[ -z "${PG_PORT:-}" ]]; then
    PG_PORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fi

stop_all() {
    if [[ -n "${MLFLOW_PID:-}" ]]; then  # the server and its workers form one process group (setsid)
        kill -TERM -- "-$MLFLOW_PID" 2>/dev/null || true
        for _ in $(seq 25); do kill -0 -- "-$MLFLOW_PID" 2>/dev/null || break; sleep 0.2; done
        kill -KILL -- "-$MLFLOW_PID" 2>/dev/null || true
    fi
    "${AS[@]}" "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null 2>&1 || true
    echo "tracking-server: stopped"
}
trap stop_all EXIT
trap 'exit 143' INT TERM

# The unix socket lives in the (private) data folder, TCP on 127.0.0.1 only.
"${AS[@]}" "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/postgres.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PGDATA" start >/dev/null \
    || die "PostgreSQL did not start, see $PGDATA/postgres.log"
PSQL=("${AS[@]}" "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U mlflow -d postgres -qtAX)
if [[ -z $("${PSQL[@]}" -c "SELECT 1 FROM pg_database WHERE datname = 'mlflow'") ]]; then
    "${PSQL[@]}" -c "CREATE DATABASE mlflow" || die "could not create the database 'mlflow'"
fi

ARGS=(--backend-store-uri "postgresql+psycopg2://mlflow@127.0.0.1:$PG_PORT/mlflow"
      --serve-artifacts --artifacts-destination "$ARTIFACTS"
      --host "$HOST" --port "$PORT" --workers "${MLFLOW_WORKERS:-2}")
[[ -n "${MLFLOW_ALLOWED_HOSTS:-}" ]] && ARGS+=(--allowed-hosts "$MLFLOW_ALLOWED_HOSTS")
echo "tracking-server: PostgreSQL on 127.0.0.1:$PG_PORT, artifacts in $ARTIFACTS"
echo "tracking-server: export MLFLOW_TRACKING_URI=http://$HOST:$PORT"
# MLflow's job runner (GenAI scorers, trace roll-ups) is not used by this project and starts seven
# worker processes: off unless asked for.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}
setsid "$PY" -m mlflow server "${ARGS[@]}" &
MLFLOW_PID=$!
wait "$MLFLOW_PID"
