#!/bin/sh
# Start PostgreSQL; the first time (no cluster in $PGDATA), initialise one: a superuser
# $POSTGRES_USER with $POSTGRES_PASSWORD, the database $POSTGRES_DB with the vector extension,
# password logins from the network. The cluster is made beside $PGDATA and moved into place
# only when complete, so an interrupted start initialises again instead of running half a cluster.
set -eu
: "${POSTGRES_USER:=assistantd}" "${POSTGRES_DB:=assistantd}"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ]; then
        echo "assistantd-postgres: set POSTGRES_PASSWORD to initialise the database" >&2
        exit 1
    fi
    echo "assistantd-postgres: initialising $PGDATA" >&2
    init="$PGDATA.init"
    if [ -d "$PGDATA" ] && [ -n "$(ls -A "$PGDATA")" ]; then
        echo "assistantd-postgres: $PGDATA holds files but no cluster; not touching it" >&2
        exit 1
    fi
    rm -rf "$init"
    [ ! -d "$PGDATA" ] || rmdir "$PGDATA"
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    initdb -D "$init" -U "$POSTGRES_USER" --pwfile="$pwfile" -E UTF8 --no-locale \
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "$pwfile"
    cat >>"$init/postgresql.conf" <<CONF

# --- assistantd-postgres ---
listen_addresses = '*'
unix_socket_directories = '/tmp'
CONF
    echo "host all all all scram-sha-256" >>"$init/pg_hba.conf"
    # Set up on the socket only: nobody can connect over the network before it is done.
    pg_ctl -D "$init" -o "-c listen_addresses=''" -w -t 60 start >/dev/null
    if [ "$POSTGRES_DB" != postgres ]; then
        psql -X -q -v ON_ERROR_STOP=1 -h /tmp -U "$POSTGRES_USER" -d postgres \
            -c "CREATE DATABASE \"$POSTGRES_DB\""
    fi
    psql -X -q -v ON_ERROR_STOP=1 -h /tmp -U "$POSTGRES_USER" -d "$POSTGRES_DB" \
        -c "CREATE EXTENSION IF NOT EXISTS vector"
    pg_ctl -D "$init" -m fast -w -t 60 stop >/dev/null
    mv "$init" "$PGDATA"
    echo "assistantd-postgres: initialised" >&2
fi

exec postgres -D "$PGDATA" "$@"
