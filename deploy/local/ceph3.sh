#!/usr/bin/env bash
# deploy/local/ceph3.sh start|stop|status|wait-up|kill|revive — a
# three-OSD Ceph RGW for the fault tests (tests/ceph3), beside the one-OSD
# default of up.sh: its own state directory and ports, the same scripts
# (ceph.sh; see there for the subcommands).
#
# One monitor, three memstore OSDs, pools of size 3 and min_size 2, a short
# heartbeat grace, one radosgw. `start` also writes
# ${AMO_CEPH3_DIR:-/tmp/amo-ceph3}/env with the AMO_S3_* settings of this
# cluster (Redis is the one of up.sh):
#
#   . /tmp/amo-ceph3/env
#
# Settings (environment):
#   AMO_CEPH3_DIR       state dir (default /tmp/amo-ceph3)
#   AMO_CEPH3_MON_PORT  monitor port (default 40889)
#   AMO_CEPH3_RGW_PORT  RGW HTTP port (default 7580)
#   AMO_CEPH3_MEM       memstore bytes of each OSD (default 3 GiB)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export AMO_LOCAL_DIR=${AMO_CEPH3_DIR:-/tmp/amo-ceph3}
export AMO_LOCAL_MON_PORT=${AMO_CEPH3_MON_PORT:-40889}
export AMO_LOCAL_RGW_PORT=${AMO_CEPH3_RGW_PORT:-7580}
export AMO_LOCAL_CEPH_MEM=${AMO_CEPH3_MEM:-3221225472}
export AMO_LOCAL_CEPH_OSDS=3
BUCKET=${AMO_S3_BUCKET:-amo}

bash "$HERE/ceph.sh" "$@"

if [ "${1:-}" = start ]; then
  tmp=$(mktemp "$AMO_LOCAL_DIR/env.XXXXXX")
  {
    echo "# Written by deploy/local/ceph3.sh; source it: . $AMO_LOCAL_DIR/env"
    printf 'export %s=%q\n' \
      AMO_S3_ENDPOINT "http://127.0.0.1:$AMO_LOCAL_RGW_PORT" \
      AMO_S3_BUCKET "$BUCKET" \
      AMO_S3_REGION us-east-1 \
      AMO_KEY_FILE "$AMO_LOCAL_DIR/key.json" \
      AMO_CEPH3_SCRIPT "$HERE/ceph3.sh"
  } >"$tmp"
  mv -f "$tmp" "$AMO_LOCAL_DIR/env"
fi
