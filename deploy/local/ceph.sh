#!/usr/bin/env bash
# deploy/local/ceph.sh start|stop|status|wait-up|kill|revive — a one-machine
# Ceph 16 RADOS Gateway.
#
# One monitor, one OSD (or AMO_LOCAL_CEPH_OSDS of them) on the in-memory
# `memstore` object store and one radosgw (beast) on 127.0.0.1, as plain
# background processes with all their state in
# ${AMO_LOCAL_DIR:-/tmp/amo-local}/ceph; the settings that matter and the S3
# client's traps are in docs/operations.md, "The local Ceph RGW". Data lives in RAM: every fresh start
# is a new, empty cluster. Several clusters run side by side when each has
# its own AMO_LOCAL_DIR and ports (deploy/local/ceph3.sh: three OSDs).
#
# With one OSD, pools have one copy. With several, pools have size 3 (or the
# number of OSDs, if fewer) and min_size 2, CRUSH places the copies on
# distinct OSDs (there is one host), and the heartbeat grace is short
# (AMO_LOCAL_CEPH_HEARTBEAT_GRACE, 4 s): a dead OSD is marked down within
# seconds, by one reporting peer.
#
#   start   idempotent. If the three daemons of the pid files are alive and the
#           RGW answers, only makes sure the user and bucket exist and prints
#           the info again. Otherwise stops whatever is left (pid files),
#           wipes the scratch dir and builds a fresh cluster, then creates RGW
#           user `amoapi`, the bucket ${AMO_S3_BUCKET:-amo} with its
#           lifecycle rules (docs/operations.md, "The bucket lifecycle
#           rules"), and writes ${AMO_LOCAL_DIR}/key.json
#           ({"access_key": ..., "secret_key": ...}).
#   stop    RGW, then OSD, then mon: SIGTERM, bounded wait, SIGKILL; by pid
#           files only.
#   status  exits 0 if the RGW answers GET / with 200, 1 otherwise.
#   wait-up [SECONDS]
#           waits (default 120 s) until the monitor has every OSD up and in;
#           prints how long that took. (Placement-group states are kept by
#           ceph-mgr, which this cluster does without: a pool's PGs are
#           active when a write to it succeeds.)
#   kill DAEMON
#           SIGKILL to osd.N or client.rgw (by its pid file), and waits until
#           it is gone. For fault tests. A memstore OSD killed so loses its
#           data: revived, it comes back empty and is backfilled.
#   revive DAEMON
#           starts osd.N or client.rgw of the existing cluster again and
#           waits until it is up (the OSD marked up, the RGW answering).
#
# Settings (environment):
#   AMO_LOCAL_DIR             state dir (default /tmp/amo-local)
#   AMO_LOCAL_MON_PORT        monitor port, msgr v2 (default 40789)
#   AMO_LOCAL_RGW_PORT        RGW HTTP port (default 7480)
#   AMO_LOCAL_CEPH_MEM        memstore_device_bytes of each OSD (default 12 GiB: the benchmark moves several GiB)
#   AMO_LOCAL_CEPH_OSDS       how many OSDs (default 1; 1 to 9)
#   AMO_LOCAL_CEPH_HEARTBEAT_GRACE  seconds before an OSD that stopped answering
#                             its peers is reported down (default 4; with several OSDs)
#   AMO_LOCAL_S3_ACCESS_KEY   access key of user amoapi (default AMOLOCALDEVACCESSKEY)
#   AMO_LOCAL_S3_SECRET_KEY   its secret key (default: a fixed dev value)
#   AMO_S3_BUCKET             bucket to create (default amo)
#   AMO_S3_PREFIX             the service's key prefix, which the lifecycle
#                             rules cover (default empty)
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
OSDS=${AMO_LOCAL_CEPH_OSDS:-1}
HEARTBEAT_GRACE=${AMO_LOCAL_CEPH_HEARTBEAT_GRACE:-4}
ACCESS_KEY=${AMO_LOCAL_S3_ACCESS_KEY:-AMOLOCALDEVACCESSKEY}
SECRET_KEY=${AMO_LOCAL_S3_SECRET_KEY:-amoLocalDevSecretKeyNotForProduction0000}
BUCKET=${AMO_S3_BUCKET:-amo}
PREFIX=${AMO_S3_PREFIX:-}
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
    osd.[0-9]) echo ceph-osd ;;
    client.rgw) echo radosgw ;;
  esac
}
osd_names() {
  local id
  for ((id = 0; id < OSDS; id++)); do echo "osd.$id"; done
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
  local osd
  STOPPED_ANY=0
  stop_daemon client.rgw 20
  for osd in $(osd_names); do stop_daemon "$osd" 30; done
  stop_daemon mon.a 10
  if [ "$STOPPED_ANY" -eq 1 ]; then log "stopped"; else log "not running"; fi
}

# The pool and failure-detection settings for $OSDS OSDs.
replication_conf() {
  if [ "$OSDS" -eq 1 ]; then
    echo "osd_pool_default_size = 1"
    echo "mon_allow_pool_size_one = true"
    return
  fi
  local size=$((OSDS < 3 ? OSDS : 3))
  cat <<REPLICATION
osd_pool_default_size = $size
osd_pool_default_min_size = 2
# One host: copies go to distinct OSDs, not hosts.
osd_crush_chooseleaf_type = 0
# A dead OSD is reported down by one peer after the grace, not 20 s.
osd_heartbeat_interval = 1
osd_heartbeat_grace = $HEARTBEAT_GRACE
mon_osd_adjust_heartbeat_grace = false
mon_osd_min_down_reporters = 1
mon_osd_reporter_subtree_level = osd
REPLICATION
}

write_conf() {
  local fsid=$1
  cat >"$CONF" <<CONF
# Written by deploy/local/ceph.sh: one-machine throw-away cluster, $OSDS OSD(s).
[global]
fsid = $fsid
mon_host = v2:127.0.0.1:$MON_PORT
public_addr = 127.0.0.1
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
keyring = /dev/null
$(replication_conf)
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
osd_data = $CEPH_DIR/\$name
osd_objectstore = memstore
memstore_device_bytes = $MEM_BYTES
osd_fast_shutdown = false
admin_socket = $RUN_DIR/\$name.asok
pid_file = $RUN_DIR/\$name.pid

[client.rgw]
# tcp_nodelay=1: beast writes a small answer's head and body apart, and with
# Nagle's algorithm on the body waits for the client's delayed ACK (40 ms on
# every small GET of a kept-alive connection; docs/performance.md).
rgw_frontends = beast endpoint=127.0.0.1:$RGW_PORT tcp_nodelay=1
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
    grep -qx "rgw_frontends = beast endpoint=127.0.0.1:$RGW_PORT tcp_nodelay=1" "$CONF" &&
    grep -qx "memstore_device_bytes = $MEM_BYTES" "$CONF" &&
    { [ "$OSDS" -eq 1 ] || grep -qx "# Written by deploy/local/ceph.sh: one-machine throw-away cluster, $OSDS OSD(s)." "$CONF"; }
}

running_and_healthy() {
  local osd
  for osd in $(osd_names); do [ -n "$(live_pid "$osd")" ] || return 1; done
  [ -n "$(live_pid mon.a)" ] && [ -n "$(live_pid client.rgw)" ] && conf_matches && rgw_ok
}

# osd_up N: the monitor has osd.N marked up.
osd_up() { cephc osd dump 2>/dev/null | grep -q "^osd\.$1 up"; }

# Every OSD up and in.
all_up() {
  [ "$(cephc osd dump 2>/dev/null | grep -c '^osd\.[0-9]* up  *in ')" = "$OSDS" ]
}

# Launch a self-daemonizing Ceph daemon, keep what it prints before it forks.
launch() {
  local name=$1
  shift
  "$@" >"$LOG_DIR/$name.out" 2>&1 ||
    { show_log_tail "$LOG_DIR/$name.out" "$(logfile_of "$name")"; die "$name failed to start"; }
}

fresh_cluster() {
  local fsid osd_uuid osd_id id osd
  stop
  case "$CEPH_DIR" in */ceph) ;; *) die "refusing to wipe unexpected dir $CEPH_DIR" ;; esac
  rm -rf "$CEPH_DIR"
  mkdir -p "$RUN_DIR" "$LOG_DIR" "$CEPH_DIR/rgw"
  for osd in $(osd_names); do mkdir -p "$CEPH_DIR/$osd"; done

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

  for ((id = 0; id < OSDS; id++)); do
    log "creating osd.$id (memstore, $MEM_BYTES bytes)"
    osd_uuid=$(uuidgen)
    osd_id=$(cephc osd new "$osd_uuid" 2>"$LOG_DIR/osd-new.out") ||
      { show_log_tail "$LOG_DIR/osd-new.out"; die "ceph osd new failed"; }
    [ "$osd_id" = "$id" ] || die "ceph osd new gave id '$osd_id', expected $id"
    launch "osd.$id-mkfs" ceph-osd -c "$CONF" -i "$id" --mkfs --osd-uuid "$osd_uuid"
    launch "osd.$id" ceph-osd -c "$CONF" -i "$id"
  done
  for ((id = 0; id < OSDS; id++)); do
    wait_for "$OSD_TIMEOUT" "osd.$id to be up" "osd.$id" osd_up "$id"
  done

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

# The backstops of the service's sweep (src/storage/bucket.rs gives a
# bucket it creates the same): S3 aborts multipart uploads unfinished after
# 7 days, and expires the per-token markers under <prefix>.tokens/ after 1
# day. A PUT replaces the bucket's whole lifecycle configuration.
ensure_lifecycle() {
  local rules body code
  rules="<LifecycleConfiguration>\
<Rule><ID>amo-abort-incomplete-multipart-uploads</ID><Filter><Prefix>$PREFIX</Prefix></Filter>\
<Status>Enabled</Status><AbortIncompleteMultipartUpload><DaysAfterInitiation>7</DaysAfterInitiation>\
</AbortIncompleteMultipartUpload></Rule>\
<Rule><ID>amo-expire-token-markers</ID><Filter><Prefix>${PREFIX}.tokens/</Prefix></Filter>\
<Status>Enabled</Status><Expiration><Days>1</Days></Expiration></Rule>\
</LifecycleConfiguration>"
  body=$(mktemp)
  # `?lifecycle=`: curl signs the query as written, and S3 signs `lifecycle=`.
  code=$(printf %s "$rules" | curl -s -o "$body" -w '%{http_code}' --max-time 30 -X PUT \
    --aws-sigv4 "aws:amz:$REGION:s3" --user "$ACCESS_KEY:$SECRET_KEY" \
    -H "x-amz-content-sha256: $(printf %s "$rules" | sha256sum | cut -d' ' -f1)" \
    --data-binary @- "$RGW_URL/$BUCKET?lifecycle=" || true)
  if [ "$code" = 200 ]; then
    rm -f "$body"
    return 0
  fi
  log "setting the lifecycle rules of bucket $BUCKET failed: HTTP $code"
  cat "$body" >&2
  echo >&2
  rm -f "$body"
  die "could not set the lifecycle rules of bucket $BUCKET"
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
  for v in "$MON_PORT" "$RGW_PORT" "$MEM_BYTES" "$HEARTBEAT_GRACE"; do
    [[ $v =~ ^[0-9]+$ ]] || die "not a number: '$v'"
  done
  [[ $OSDS =~ ^[1-9]$ ]] || die "AMO_LOCAL_CEPH_OSDS must be 1 to 9, not '$OSDS'"
  [[ $ACCESS_KEY =~ ^[A-Za-z0-9_.+/=-]+$ ]] || die "AMO_LOCAL_S3_ACCESS_KEY: use letters, digits and _.+/=- only"
  [[ $SECRET_KEY =~ ^[A-Za-z0-9_.+/=-]+$ ]] || die "AMO_LOCAL_S3_SECRET_KEY: use letters, digits and _.+/=- only"
  [[ $BUCKET =~ ^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$ ]] || die "AMO_S3_BUCKET '$BUCKET' is not a valid bucket name"
  [[ $PREFIX =~ ^[A-Za-z0-9_./-]*$ ]] || die "AMO_S3_PREFIX: use letters, digits and _./- only"
}

start() {
  validate_settings
  if running_and_healthy; then
    log "already running (mon $(live_pid mon.a), $(daemon_pids), rgw $(live_pid client.rgw))"
  else
    fresh_cluster
  fi
  ensure_user
  ensure_bucket
  ensure_lifecycle
  write_key_file
  log "ready: mon $(live_pid mon.a), $(daemon_pids), rgw $(live_pid client.rgw); logs in $LOG_DIR"
  print_info
}

daemon_pids() {
  local osd pids=()
  for osd in $(osd_names); do pids+=("$osd $(live_pid "$osd")"); done
  local IFS=,
  echo "${pids[*]}"
}

wait_up() {
  local limit=${1:-120} started=$SECONDS
  [[ $limit =~ ^[0-9]+$ ]] || die "wait-up: not a number of seconds: '$limit'"
  until all_up; do
    if [ $((SECONDS - started)) -ge "$limit" ]; then
      cephc osd dump >&2 || true
      die "not every OSD is up and in after ${limit}s"
    fi
    sleep 0.2
  done
  log "all $OSDS OSD(s) up and in after $((SECONDS - started))s"
}

# The daemons kill and revive work on.
check_daemon() {
  case "$1" in
    client.rgw) ;;
    osd.[0-9]) [ "${1#osd.}" -lt "$OSDS" ] || die "no $1: the cluster has $OSDS OSD(s)" ;;
    *) die "kill and revive take osd.N or client.rgw, not '${1:-}'" ;;
  esac
}

kill_daemon() {
  local name=$1 pid deadline
  check_daemon "$name"
  pid=$(live_pid "$name")
  [ -n "$pid" ] || die "$name is not running"
  log "SIGKILL to $name (pid $pid)"
  kill -KILL "$pid"
  deadline=$((SECONDS + 10))
  while is_alive "$pid"; do
    [ "$SECONDS" -lt "$deadline" ] || die "$name (pid $pid) survived SIGKILL"
    sleep 0.05
  done
  rm -f "$(pidfile_of "$name")"
}

revive() {
  local name=$1
  check_daemon "$name"
  [ -r "$CONF" ] || die "no cluster in $CEPH_DIR"
  [ -z "$(live_pid "$name")" ] || die "$name is running"
  case "$name" in
    client.rgw)
      launch client.rgw radosgw -c "$CONF" -n client.rgw
      wait_for "$RGW_TIMEOUT" "the RGW to answer GET / with 200" client.rgw rgw_ok
      ;;
    osd.*)
      launch "$name" ceph-osd -c "$CONF" -i "${name#osd.}"
      wait_for "$OSD_TIMEOUT" "$name to be up" "$name" osd_up "${name#osd.}"
      ;;
  esac
  log "$name is back (pid $(live_pid "$name"))"
}

status() {
  local name pid
  for name in mon.a $(osd_names) client.rgw; do
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
  wait-up) wait_up "${2:-120}" ;;
  kill) kill_daemon "${2:-}" ;;
  revive) revive "${2:-}" ;;
  *)
    echo "usage: $0 start|stop|status|wait-up [SECONDS]|kill DAEMON|revive DAEMON" >&2
    exit 2
    ;;
esac
