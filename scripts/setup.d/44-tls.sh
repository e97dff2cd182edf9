# The TLS tests of the Redis and PostgreSQL stores (crates/cloakroom-stores/tests: *_tls) make a
# CA and a server certificate at test time with the openssl command, then start their own
# redis-server (--tls-port) and PostgreSQL cluster (ssl=on) on free ports. Sourced by
# scripts/test.
command -v openssl >/dev/null || apt_install openssl
