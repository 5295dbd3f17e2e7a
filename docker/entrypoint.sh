#!/bin/sh
# vr180matte image entry point: `ray-head` / `ray-worker ADDRESS` start a Ray node (foreground, so the container
# lives as long as the node); anything else is a vr180matte command line (`run ...`, `batch ...`, `estimate ...`).
set -e
case "$1" in
  ray-head)
    shift
    exec ray start --head --block --port=6379 --ray-client-server-port=10001 --dashboard-host=0.0.0.0 "$@"
    ;;
  ray-worker)
    addr="$2"
    [ -n "$addr" ] || { echo "usage: ray-worker HEAD_HOST:6379 [ray start options]" >&2; exit 2; }
    shift 2
    exec ray start --block --address="$addr" "$@"
    ;;
  *)
    exec vr180matte "$@"
    ;;
esac
