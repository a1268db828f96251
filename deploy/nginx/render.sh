#!/usr/bin/env bash
# deploy/nginx/render.sh — fill nginx.conf.template.
#
# usage: render.sh PREFIX LISTEN UPSTREAM... > nginx.conf
#   PREFIX    directory for pid, logs and temp files (created if missing)
#   LISTEN    e.g. 127.0.0.1:8080
#   UPSTREAM  HOST:PORT of a replica, optionally followed by server
#             parameters in the same argument ("10.0.0.5:8080 max_fails=2")
# Then: nginx -t -p PREFIX -e PREFIX/error.log -c "$PWD/nginx.conf"
set -euo pipefail

if [ "$#" -lt 3 ]; then
  echo "usage: $0 PREFIX LISTEN UPSTREAM..." >&2
  exit 2
fi
prefix=$1 listen=$2
shift 2
case $prefix in /*) ;; *) echo "render.sh: PREFIX must be absolute: $prefix" >&2; exit 2 ;; esac
mkdir -p "$prefix"

servers=""
for u in "$@"; do
  servers+="        server $u max_fails=1 fail_timeout=5s;"$'\n'
done
servers=${servers%$'\n'}

template=$(cat "$(dirname "$0")/nginx.conf.template")
template=${template//@PREFIX@/$prefix}
template=${template//@LISTEN@/$listen}
template=${template//@UPSTREAM_SERVERS@/$servers}
if [[ $template =~ @(PREFIX|LISTEN|UPSTREAM_SERVERS)@ ]]; then
  echo "render.sh: placeholder ${BASH_REMATCH[0]} left unfilled" >&2
  exit 1
fi
printf '%s\n' "$template"
