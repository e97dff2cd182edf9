# memcached on 127.0.0.1:11211 for the store tests: installed when missing, started when absent.
# (The memcached store's fault test also runs throwaway memcached processes on free ports.)
if ! port_open 127.0.0.1 11211; then
    command -v memcached >/dev/null || apt_install memcached
    say "starting memcached on 127.0.0.1:11211"
    # -u: memcached refuses to run as root without naming a user; -U 0: no UDP.
    mc_user=memcache
    id -u "$mc_user" >/dev/null 2>&1 || mc_user=$(id -un)
    memcached -d -u "$mc_user" -l 127.0.0.1 -p 11211 -U 0 -m 64 \
        || die "memcached did not start; run: memcached -d -u $mc_user -l 127.0.0.1 -p 11211"
    wait_port 127.0.0.1 11211 memcached
fi
export CLOAKROOM_TEST_MEMCACHED=${CLOAKROOM_TEST_MEMCACHED:-127.0.0.1:11211}
