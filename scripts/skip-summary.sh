#!/usr/bin/env bash
# Summarise the tests that skipped during `make test`, by reason. Each line of LOG is
# `reason<TAB>binary::test<TAB>message`, appended by tests/common/mod.rs `skip()` (cargo's
# harness hides a passing test's SKIP line, so this is where skips become visible). A test
# that skipped for the same reason twice (two files absent) counts once. Exit status 0 always.
set -u
LOG="${1:?usage: skip-summary.sh LOG}"
if [ ! -s "$LOG" ]; then
  echo "skip summary: 0 tests skipped"
  exit 0
fi
sort -u -t "$(printf '\t')" -k1,1 -k2,2 "$LOG" | awk -F '\t' -v logfile="$LOG" '
  !seen[$1 FS $2]++ { n[$1]++; tests[$1] = tests[$1] "\n    " $2 "  (" $3 ")"; if (!(($2) in t)) { t[$2] = 1; total++ } }
  END {
    line = ""
    for (r in n) line = line (line == "" ? "" : ", ") n[r] " for want of " r
    printf "skip summary: %d test%s skipped (%s); details in %s\n", total, total == 1 ? "" : "s", line, logfile
    for (r in n) printf "  %s:%s\n", r, tests[r]
  }'
