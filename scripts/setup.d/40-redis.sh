# Redis on 127.0.0.1:6379 for the store tests: started when absent, installed when missing.
if ! port_open 127.0.0.1 6379; then
    command -v redis-server >/dev/null || apt_install redis-server
    say "starting redis-server on 127.0.0.1:6379"
    mkdir -p /tmp/cloakroom-redis
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
        --dir /tmp/cloakroom-redis --logfile /tmp/cloakroom-redis/redis.log \
        || die "redis-server did not start; see /tmp/cloakroom-redis/redis.log"
    wait_port 127.0.0.1 6379 redis-server
fi
export CLOAKROOM_TEST_REDIS=${CLOAKROOM_TEST_REDIS:-redis://127.0.0.1:6379}
