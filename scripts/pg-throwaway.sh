#!/usr/bin/env bash
# A throwaway PostgreSQL server in a directory, on 127.0.0.1 and a free port.
#   pg-throwaway.sh start DIR  -> prints a postgres:// URL once the server accepts connections
#   pg-throwaway.sh restart DIR (same port; open connections drop)
#   pg-throwaway.sh stop DIR
set -euo pipefail
cmd="$1"; dir="$2"
bindir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
[ -x "$bindir/initdb" ] || { echo "PostgreSQL server binaries not found" >&2; exit 1; }
runas=()
if [ "$(id -u)" = "0" ]; then runas=(runuser -u postgres --); fi

case "$cmd" in
start)
  mkdir -p "$dir"
  if [ "$(id -u)" = "0" ]; then
    chown postgres "$dir"
    "${runas[@]}" test -w "$dir" \
      || { echo "user postgres cannot reach $dir (a parent directory is not searchable)" >&2; exit 1; }
  fi
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  "${runas[@]}" "$bindir/initdb" -D "$dir/data" -U sfu --auth=trust -E UTF8 >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; exit 1; }
  "${runas[@]}" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off" start >/dev/null \
    || { cat "$dir/server.log" >&2; exit 1; }
  echo "$port" > "$dir/port"
  "${runas[@]}" "$bindir/createdb" -h 127.0.0.1 -p "$port" -U sfu sfu_test >/dev/null
  echo "postgres://sfu@127.0.0.1:$port/sfu_test"
  ;;
restart)
  # Same port and data; clients see their connections drop (tests of reconnection use this).
  "${runas[@]}" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -m fast -w -t 30 restart >/dev/null
  ;;
stop)
  [ -d "$dir/data" ] && "${runas[@]}" "$bindir/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
  ;;
*) echo "usage: $0 start|restart|stop DIR" >&2; exit 2 ;;
esac
