#!/usr/bin/env bash
# wispd_drain_stream.sh through the durable session.
WISP_DRAIN_DURABLE=true exec bash "$(dirname "$0")/wispd_drain_stream.sh"
