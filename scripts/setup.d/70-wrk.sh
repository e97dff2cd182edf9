# wrk, the HTTP load generator of the side-by-side session-layer benchmark
# (cargo bench -p cloakroom-tower --bench tower; docs/benchmarks.md). No test needs it: it is
# installed here so that a fresh machine can run that benchmark.
command -v wrk >/dev/null || apt_install wrk
