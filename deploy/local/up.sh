#!/usr/bin/env bash
# deploy/local/up.sh — bring up the local dev stack: Redis + single-node Ceph RGW.
#
# Installs what is missing (install.sh), starts Redis (redis.sh) and Ceph
# (ceph.sh), all on 127.0.0.1, then writes ${AMO_LOCAL_DIR:-/tmp/amo-local}/env
# with the AMO_* settings the service and its tests need:
#
#   . /tmp/amo-local/env
#
# Idempotent: running it again while everything is up only prints the same
# settings. Stop everything with deploy/local/down.sh.
#
# Overridable: AMO_LOCAL_DIR, AMO_LOCAL_REDIS_PORT, AMO_LOCAL_MON_PORT,
# AMO_LOCAL_RGW_PORT, AMO_LOCAL_CEPH_MEM, AMO_LOCAL_S3_ACCESS_KEY,
# AMO_LOCAL_S3_SECRET_KEY, AMO_S3_BUCKET, AMO_JWT_SECRET (>= 32 bytes).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BASE_DIR=${AMO_LOCAL_DIR:-/tmp/amo-local}
ENV_FILE=$BASE_DIR/env

REDIS_PORT=${AMO_LOCAL_REDIS_PORT:-6379}
RGW_PORT=${AMO_LOCAL_RGW_PORT:-7480}
BUCKET=${AMO_S3_BUCKET:-amo}
JWT_SECRET=${AMO_JWT_SECRET:-amo-local-dev-jwt-secret-do-not-use-in-production}
ACCESS_KEY=${AMO_LOCAL_S3_ACCESS_KEY:-AMOLOCALDEVACCESSKEY}
SECRET_KEY=${AMO_LOCAL_S3_SECRET_KEY:-amoLocalDevSecretKeyNotForProduction0000}

if [ "${#JWT_SECRET}" -lt 32 ]; then
  echo "up.sh: ERROR: AMO_JWT_SECRET must be at least 32 bytes" >&2
  exit 1
fi

bash "$HERE/install.sh"
bash "$HERE/redis.sh" start
bash "$HERE/ceph.sh" start

mkdir -p "$BASE_DIR"
tmp=$(mktemp "$BASE_DIR/env.XXXXXX")
{
  echo "# Written by deploy/local/up.sh; source it: . $ENV_FILE"
  printf 'export %s=%q\n' \
    AMO_REDIS_URL "redis://127.0.0.1:$REDIS_PORT" \
    AMO_S3_ENDPOINT "http://127.0.0.1:$RGW_PORT" \
    AMO_S3_BUCKET "$BUCKET" \
    AMO_S3_REGION us-east-1 \
    AMO_KEY_FILE "$BASE_DIR/key.json" \
    AMO_JWT_SECRET "$JWT_SECRET"
} >"$tmp"
mv -f "$tmp" "$ENV_FILE"

echo
echo "== $ENV_FILE"
cat "$ENV_FILE"
echo
echo "S3 endpoint:   http://127.0.0.1:$RGW_PORT (path-style, region us-east-1)"
echo "S3 access key: $ACCESS_KEY"
echo "S3 secret key: $SECRET_KEY"
echo "Use it with:   . $ENV_FILE"
