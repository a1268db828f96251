#!/usr/bin/env bash
# deploy/local/ceph.sh start|stop|status — a single-node Ceph 16 RADOS Gateway.
#
# One monitor, one OSD on the in-memory `memstore` object store and one
# radosgw (beast) on 127.0.0.1, as plain background processes with all their
# state in ${AMO_LOCAL_DIR:-/tmp/amo-local}/ceph; the settings that matter
# and the S3 client's traps are in docs/operations.md, "The local Ceph RGW".
# Data lives in RAM: every fresh start is a new, empty cluster.
#
#   start   idempotent. If the three daemons of the pid files are alive and the
#           RGW answers, only makes sure the user and bucket exist and prints
#           the info again. Otherwise stops whatever is left (pid files),
#           wipes the scratch dir and builds a fresh cluster, then creates RGW
#           user `amoapi`, the bucket ${AMO_S3_BUCKET:-amo}, and writes
#           ${AMO_LOCAL_DIR}/key.json ({"access_key": ..., "secret_key": ...}).
#   stop    RGW, then OSD, then mon: SIGTERM, bounded wait, SIGKILL; by pid
#           files only.
#   status  exits 0 if the RGW answers GET / with 200, 1 otherwise.
#
# Settings (environment):
#   AMO_LOCAL_DIR             state dir (default /tmp/amo-local)
#   AMO_LOCAL_MON_PORT        monitor port, msgr v2 (default 40789)
#   AMO_LOCAL_RGW_PORT        RGW HTTP port (default 7480)
#   AMO_LOCAL_CEPH_MEM        memstore_device_bytes (default 12 GiB: the benchmark moves several GiB)
#   AMO_LOCAL_S3_ACCESS_KEY   access key of user amoapi (default AMOLOCALDEVACCESSKEY)
#   AMO_LOCAL_S3_SECRET_KEY   its secret key (default: a fixed dev value)
#   AMO_S3_BUCKET             bucket to create (default amo)
set -euo pipefail

BASE_DIR=${AMO_LOCAL_DIR:-/tmp/amo-local}
CEPH_DIR=$BASE_DIR/ceph
CONF=$CEPH_DIR/ceph.conf
RUN_DIR=$CEPH_DIR/run
LOG_DIR=$CEPH_DIR/log
KEY_FILE=$BASE_DIR/key.json

MON_PORT=${AMO_LOCAL_MON_PORT:-40789}
RGW_PORT=${AMO_LOCAL_RGW_PORT:-7480}
MEM_BYTES=${AMO_LOCAL_CEPH_MEM:-12884901888}
ACCESS_KEY=${AMO_LOCAL_S3_ACCESS_KEY:-AMOLOCALDEVACCESSKEY}
SECRET_KEY=${AMO_LOCAL_S3_SECRET_KEY:-amoLocalDevSecretKeyNotForProduction0000}
BUCKET=${AMO_S3_BUCKET:-amo}
RGW_USER=amoapi
REGION=us-east-1
RGW_URL=http://127.0.0.1:$RGW_PORT

MON_TIMEOUT=30
OSD_TIMEOUT=60
RGW_TIMEOUT=60
# SHA-256 of the empty body: curl 7.88 --aws-sigv4 does not send it itself.
EMPTY_SHA256=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855

log() { echo "ceph.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# daemon name -> executable, pid file, log file
exe_of() {
  case "$1" in
    mon.a) echo ceph-mon ;;
    osd.0) echo ceph-osd ;;
    client.rgw) echo radosgw ;;
  esac
}
pidfile_of() { echo "$RUN_DIR/$1.pid"; }
logfile_of() { echo "$LOG_DIR/$1.log"; }

# True if the process exists and is not a zombie (a killed daemon whose
# parent has not reaped it yet still answers kill -0).
is_alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [ "${stat%% *}" != Z ]
}

# The pid in the daemon's pid file if that process is alive and runs the
# expected executable (guards against a pid reused after a reboot).
live_pid() {
  local pidfile pid exe
  pidfile=$(pidfile_of "$1")
  [ -r "$pidfile" ] || return 0
  pid=$(tr -dc '0-9' <"$pidfile")
  [ -n "$pid" ] || return 0
  is_alive "$pid" || return 0
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
  exe=${exe##*/}
  if [ "${exe%% *}" = "$(exe_of "$1")" ]; then echo "$pid"; fi
}

show_log_tail() {
  local f
  for f in "$@"; do
    if [ -r "$f" ]; then
      log "last lines of $f:"
      tail -n 25 "$f" >&2
    fi
  done
}

port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

cephc() { timeout 30 ceph -c "$CONF" --connect-timeout 10 "$@"; }

rgw_http_code() {
  curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$RGW_URL/" 2>/dev/null || true
}
rgw_ok() { [ "$(rgw_http_code)" = 200 ]; }

# wait_for <seconds> <what> <daemon> <command...>: poll the command until it
# succeeds; fail early if the daemon dies, fail at the deadline.
wait_for() {
  local limit=$1 what=$2 daemon=$3
  shift 3
  local deadline=$((SECONDS + limit)) started=$SECONDS seen=0
  until "$@" >/dev/null 2>&1; do
    # A daemon that forked may write its pid file a moment after we return.
    if [ -n "$(live_pid "$daemon")" ]; then
      seen=1
    elif [ "$seen" -eq 1 ] || [ $((SECONDS - started)) -ge 10 ]; then
      show_log_tail "$(logfile_of "$daemon")" "$LOG_DIR/$daemon.out"
      die "$daemon is not running (died, or wrote no pid file) while waiting for $what"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      show_log_tail "$(logfile_of "$daemon")" "$LOG_DIR/$daemon.out"
      die "timed out after ${limit}s waiting for $what"
    fi
    sleep 0.2
  done
}

stop_daemon() {
  local name=$1 grace=$2 pid deadline
  pid=$(live_pid "$name")
  if [ -z "$pid" ]; then
    if [ -e "$(pidfile_of "$name")" ]; then
      log "removing stale pid file of $name"
      rm -f "$(pidfile_of "$name")"
    fi
    return 0
  fi
  STOPPED_ANY=1
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + grace))
  while is_alive "$pid" && [ "$SECONDS" -lt "$deadline" ]; do
    sleep 0.1
  done
  if is_alive "$pid"; then
    log "$name (pid $pid) still alive after ${grace}s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    deadline=$((SECONDS + 10))
    while is_alive "$pid" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
    if is_alive "$pid"; then die "$name (pid $pid) survived SIGKILL"; fi
  fi
  rm -f "$(pidfile_of "$name")"
}

stop() {
  # RGW first (it may ignore SIGTERM for ~10 s), then the OSD (memstore
  # writes its data out on a clean shutdown), then the monitor.
  STOPPED_ANY=0
  stop_daemon client.rgw 20
  stop_daemon osd.0 30
  stop_daemon mon.a 10
  if [ "$STOPPED_ANY" -eq 1 ]; then log "stopped"; else log "not running"; fi
}

write_conf() {
  local fsid=$1
  cat >"$CONF" <<CONF
# Written by deploy/local/ceph.sh: single-node throw-away cluster.
[global]
fsid = $fsid
mon_host = v2:127.0.0.1:$MON_PORT
public_addr = 127.0.0.1
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
keyring = /dev/null
osd_pool_default_size = 1
mon_allow_pool_size_one = true
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
paxos_propose_interval = 0.1
run_dir = $RUN_DIR
log_file = $LOG_DIR/\$name.log

[mon]
mon_data = $CEPH_DIR/mon.a
admin_socket = $RUN_DIR/\$name.asok
pid_file = $RUN_DIR/\$name.pid

[osd]
osd_data = $CEPH_DIR/osd.0
osd_objectstore = memstore
memstore_device_bytes = $MEM_BYTES
osd_fast_shutdown = false
admin_socket = $RUN_DIR/\$name.asok
pid_file = $RUN_DIR/\$name.pid

[client.rgw]
rgw_frontends = beast endpoint=127.0.0.1:$RGW_PORT
rgw_data = $CEPH_DIR/rgw
ms_mon_client_mode = crc
client_mount_timeout = 15
rgw_gc_obj_min_wait = 30
rgw_gc_processor_period = 30
admin_socket = $RUN_DIR/\$name.asok
pid_file = $RUN_DIR/\$name.pid
CONF
}

# True when the running cluster was configured with the current settings.
conf_matches() {
  [ -r "$CONF" ] &&
    grep -qx "mon_host = v2:127.0.0.1:$MON_PORT" "$CONF" &&
    grep -qx "rgw_frontends = beast endpoint=127.0.0.1:$RGW_PORT" "$CONF" &&
    grep -qx "memstore_device_bytes = $MEM_BYTES" "$CONF"
}

running_and_healthy() {
  [ -n "$(live_pid mon.a)" ] && [ -n "$(live_pid osd.0)" ] &&
    [ -n "$(live_pid client.rgw)" ] && conf_matches && rgw_ok
}

osd0_up() { cephc osd dump 2>/dev/null | grep -q '^osd\.0 up'; }

# Launch a self-daemonizing Ceph daemon, keep what it prints before it forks.
launch() {
  local name=$1
  shift
  "$@" >"$LOG_DIR/$name.out" 2>&1 ||
    { show_log_tail "$LOG_DIR/$name.out" "$(logfile_of "$name")"; die "$name failed to start"; }
}

fresh_cluster() {
  local fsid osd_uuid osd_id
  stop
  case "$CEPH_DIR" in */ceph) ;; *) die "refusing to wipe unexpected dir $CEPH_DIR" ;; esac
  rm -rf "$CEPH_DIR"
  mkdir -p "$RUN_DIR" "$LOG_DIR" "$CEPH_DIR/osd.0" "$CEPH_DIR/rgw"

  port_in_use "$MON_PORT" && die "127.0.0.1:$MON_PORT is in use by another process; set AMO_LOCAL_MON_PORT"
  port_in_use "$RGW_PORT" && die "127.0.0.1:$RGW_PORT is in use by another process; set AMO_LOCAL_RGW_PORT"

  fsid=$(uuidgen)
  write_conf "$fsid"

  log "creating monitor on 127.0.0.1:$MON_PORT"
  monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$MON_PORT]" "$CEPH_DIR/monmap" \
    >"$LOG_DIR/monmaptool.out" 2>&1 || { show_log_tail "$LOG_DIR/monmaptool.out"; die "monmaptool failed"; }
  launch mon.a-mkfs ceph-mon -c "$CONF" --mkfs -i a --monmap "$CEPH_DIR/monmap"
  launch mon.a ceph-mon -c "$CONF" -i a
  wait_for "$MON_TIMEOUT" "the monitor to answer" mon.a cephc mon stat

  log "creating OSD (memstore, $MEM_BYTES bytes)"
  osd_uuid=$(uuidgen)
  osd_id=$(cephc osd new "$osd_uuid" 2>"$LOG_DIR/osd-new.out") ||
    { show_log_tail "$LOG_DIR/osd-new.out"; die "ceph osd new failed"; }
  [ "$osd_id" = 0 ] || die "ceph osd new gave id '$osd_id', expected 0"
  launch osd.0-mkfs ceph-osd -c "$CONF" -i 0 --mkfs --osd-uuid "$osd_uuid"
  launch osd.0 ceph-osd -c "$CONF" -i 0
  wait_for "$OSD_TIMEOUT" "osd.0 to be up" osd.0 osd0_up

  log "starting radosgw on $RGW_URL"
  launch client.rgw radosgw -c "$CONF" -n client.rgw
  wait_for "$RGW_TIMEOUT" "the RGW to answer GET / with 200" client.rgw rgw_ok
}

ensure_user() {
  local info
  if info=$(timeout 60 radosgw-admin -c "$CONF" user info --uid="$RGW_USER" 2>/dev/null); then
    if grep -q "\"access_key\": \"$ACCESS_KEY\"" <<<"$info" &&
      grep -q "\"secret_key\": \"$SECRET_KEY\"" <<<"$info"; then
      return 0
    fi
    log "setting the keys of RGW user $RGW_USER"
    timeout 60 radosgw-admin -c "$CONF" key create --uid="$RGW_USER" --key-type=s3 \
      --access-key="$ACCESS_KEY" --secret-key="$SECRET_KEY" >"$LOG_DIR/radosgw-admin.out" 2>&1 ||
      { show_log_tail "$LOG_DIR/radosgw-admin.out"; die "radosgw-admin key create failed"; }
    return 0
  fi
  log "creating RGW user $RGW_USER"
  timeout 60 radosgw-admin -c "$CONF" user create --uid="$RGW_USER" --display-name="$RGW_USER" \
    --access-key="$ACCESS_KEY" --secret-key="$SECRET_KEY" >"$LOG_DIR/radosgw-admin.out" 2>&1 ||
    { show_log_tail "$LOG_DIR/radosgw-admin.out"; die "radosgw-admin user create failed"; }
}

ensure_bucket() {
  local body code
  body=$(mktemp)
  code=$(curl -s -o "$body" -w '%{http_code}' --max-time 30 -X PUT \
    --aws-sigv4 "aws:amz:$REGION:s3" --user "$ACCESS_KEY:$SECRET_KEY" \
    -H "x-amz-content-sha256: $EMPTY_SHA256" \
    "$RGW_URL/$BUCKET" || true)
  if [ "$code" = 200 ] || grep -q BucketAlreadyOwnedByYou "$body"; then
    rm -f "$body"
    return 0
  fi
  log "creating bucket $BUCKET failed: HTTP $code"
  cat "$body" >&2
  echo >&2
  rm -f "$body"
  die "could not create bucket $BUCKET"
}

write_key_file() {
  local tmp
  mkdir -p "$BASE_DIR"
  tmp=$(mktemp "$BASE_DIR/key.json.XXXXXX")
  printf '{"access_key": "%s", "secret_key": "%s"}\n' "$ACCESS_KEY" "$SECRET_KEY" >"$tmp"
  chmod 600 "$tmp"
  mv -f "$tmp" "$KEY_FILE"
}

print_info() {
  echo "AMO_S3_ENDPOINT=$RGW_URL"
  echo "AMO_S3_BUCKET=$BUCKET"
  echo "AMO_S3_REGION=$REGION"
  echo "AMO_KEY_FILE=$KEY_FILE"
  echo "S3 access key: $ACCESS_KEY"
  echo "S3 secret key: $SECRET_KEY"
}

validate_settings() {
  local v
  for v in "$MON_PORT" "$RGW_PORT" "$MEM_BYTES"; do
    [[ $v =~ ^[0-9]+$ ]] || die "not a number: '$v'"
  done
  [[ $ACCESS_KEY =~ ^[A-Za-z0-9_.+/=-]+$ ]] || die "AMO_LOCAL_S3_ACCESS_KEY: use letters, digits and _.+/=- only"
  [[ $SECRET_KEY =~ ^[A-Za-z0-9_.+/=-]+$ ]] || die "AMO_LOCAL_S3_SECRET_KEY: use letters, digits and _.+/=- only"
  [[ $BUCKET =~ ^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$ ]] || die "AMO_S3_BUCKET '$BUCKET' is not a valid bucket name"
}

start() {
  validate_settings
  if running_and_healthy; then
    log "already running (mon $(live_pid mon.a), osd $(live_pid osd.0), rgw $(live_pid client.rgw))"
  else
    fresh_cluster
  fi
  ensure_user
  ensure_bucket
  write_key_file
  log "ready: mon $(live_pid mon.a), osd $(live_pid osd.0), rgw $(live_pid client.rgw); logs in $LOG_DIR"
  print_info
}

status() {
  local name pid
  for name in mon.a osd.0 client.rgw; do
    pid=$(live_pid "$name")
    if [ -n "$pid" ]; then log "$name: running (pid $pid)"; else log "$name: not running"; fi
  done
  if rgw_ok; then
    log "RGW answers on $RGW_URL"
    print_info
    return 0
  fi
  log "RGW does not answer on $RGW_URL"
  return 1
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
