# shellcheck shell=bash
#
# The common start of the wispd integration tests (tests/integration/wispd_*.sh):
#
#   source "$(dirname "$0")/../lib/wispd_test.sh"
#   broker_start                 # or BROKER_PERSIST=1 broker_start, broker_start_tls DIR
#   make_fn "$fns" NAME TOPIC HANDLER_LUA
#
# Sets strict mode, sources broker.sh and wisp.sh (see them for the helpers),
# creates $TEST_TMP with its cleanup trap, and names the functions folder
# $fns ($TEST_TMP/functions, made by the first make_fn). The broker is left
# to the test, which picks the kind it needs.

set -euo pipefail
WISP_TEST_LIB=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=broker.sh
source "$WISP_TEST_LIB/broker.sh"
# shellcheck source=wisp.sh
source "$WISP_TEST_LIB/wisp.sh"
test_tmp_init
# shellcheck disable=SC2034 # for the test that sources this file
fns=$TEST_TMP/functions
