# Sourced by scripts/test and bench/run: a throwaway PostgreSQL server.
# `pg_start` sets PG_BIN, PG_DIR, PG_PORT, PG_URL, PG_RUN_AS and registers cleanup.

# The PostgreSQL major version hostplane is tested with (HOSTPLANE_PG_VERSION to try another).
PG_VERSION=${HOSTPLANE_PG_VERSION:-15}

find_pg_bin() {
    local d=/usr/lib/postgresql/$PG_VERSION/bin
    [[ -x "$d/initdb" && -x "$d/pg_ctl" && -x "$d/psql" ]] && { echo "$d"; return 0; }
    return 1
}

pg_start() {
    if ! PG_BIN=$(find_pg_bin); then
        if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
            echo "PostgreSQL $PG_VERSION not found; installing postgresql-$PG_VERSION with apt-get" >&2
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "postgresql-$PG_VERSION" >/dev/null
            PG_BIN=$(find_pg_bin) || { echo "PostgreSQL $PG_VERSION install failed" >&2; return 1; }
        else
            echo "PostgreSQL $PG_VERSION server binaries are required (/usr/lib/postgresql/$PG_VERSION/bin)" >&2
            return 1
        fi
    fi
    PG_DIR=$(mktemp -d /tmp/hostplane-pg.XXXXXX)
    PG_RUN_AS=()
    if [[ $(id -u) -eq 0 ]]; then
        # initdb refuses to run as root.
        chown postgres "$PG_DIR"
        PG_RUN_AS=(runuser -u postgres --)
    fi
    PG_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    trap pg_stop EXIT
    "${PG_RUN_AS[@]}" "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres -A trust --no-sync >"$PG_DIR/initdb.log" 2>&1 \
        || { cat "$PG_DIR/initdb.log" >&2; echo "initdb failed" >&2; return 1; }
    "${PG_RUN_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
        -o "-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1 -c max_connections=500 -c shared_buffers=128MB" start >/dev/null \
        || { cat "$PG_DIR/server.log" >&2; echo "PostgreSQL did not start" >&2; return 1; }
    PG_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
}

pg_stop() {
    if [[ -n "${PG_DIR:-}" ]]; then
        "${PG_RUN_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
        rm -rf "$PG_DIR"
    fi
}
