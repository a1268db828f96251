#!/usr/bin/env bash
# deploy/local/down.sh — stop the local dev stack started by up.sh.
#
# Stops Ceph (RGW, OSD, mon) and then Redis, by their pid files only. The
# Ceph data lived in memory and is gone; the next up.sh builds a fresh cluster.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

bash "$HERE/ceph.sh" stop
bash "$HERE/redis.sh" stop
