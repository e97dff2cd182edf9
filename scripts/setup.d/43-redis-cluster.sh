# A Redis Cluster of 3 primaries and 3 replicas on 127.0.0.1:7000-7005 for the cluster store
# tests (crates/cloakroom-stores/tests: redis_cluster), with Debian's redis-server: nodes that
# are not listening are started, and the cluster is created when its nodes know no other.
# Sourced by scripts/test, after 40-redis.sh. Every node appends with fsync (appendfsync
# always) and has a short node timeout (2 s), so the failover test's replica takes over fast.
# The failover test kills a primary and starts it again (as a replica): it uses the same
# start command, written to /tmp/cloakroom-redis-cluster/PORT/start.
command -v redis-server >/dev/null && command -v redis-cli >/dev/null || apt_install redis-server redis-tools
cluster_dir=/tmp/cloakroom-redis-cluster
cluster_ports="7000 7001 7002 7003 7004 7005"
for port in $cluster_ports; do
    mkdir -p "$cluster_dir/$port"
    cat >"$cluster_dir/$port/start" <<START
#!/bin/sh
cd "$cluster_dir/$port" && exec redis-server --daemonize yes --bind 127.0.0.1 --port $port \\
    --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 2000 \\
    --appendonly yes --appendfsync always --save "" --dir "$cluster_dir/$port" \\
    --pidfile "$cluster_dir/$port/redis.pid" --logfile "$cluster_dir/$port/redis.log"
START
    chmod +x "$cluster_dir/$port/start"
    if ! port_open 127.0.0.1 "$port"; then
        say "starting Redis Cluster node 127.0.0.1:$port"
        "$cluster_dir/$port/start" || die "redis-server did not start; see $cluster_dir/$port/redis.log"
        wait_port 127.0.0.1 "$port" "Redis Cluster node $port"
    fi
done
known=$(redis-cli -p 7000 cluster info | tr -d '\r' | sed -n 's/^cluster_known_nodes://p')
if [ "$known" = 1 ]; then
    say "creating the Redis Cluster on 127.0.0.1:7000-7005"
    # shellcheck disable=SC2046
    redis-cli --cluster create $(for p in $cluster_ports; do printf '127.0.0.1:%s ' "$p"; done) \
        --cluster-replicas 1 --cluster-yes >"$cluster_dir/create.log" 2>&1 \
        || die "redis-cli --cluster create failed; see $cluster_dir/create.log"
fi
tries=0
until redis-cli -p 7000 cluster info | tr -d '\r' | grep -qx 'cluster_state:ok'; do
    tries=$((tries + 1))
    [ "$tries" -le 150 ] || die "the Redis Cluster on 127.0.0.1:7000-7005 is not ok: redis-cli -p 7000 cluster nodes"
    sleep 0.2
done
export CLOAKROOM_TEST_REDIS_CLUSTER=${CLOAKROOM_TEST_REDIS_CLUSTER:-redis+cluster://127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002}
