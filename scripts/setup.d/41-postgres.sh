# PostgreSQL on 127.0.0.1:5432 with a database `test` for the store tests: started when absent,
# installed when missing (then the role postgres gets the password postgres, loopback only).
if ! port_open 127.0.0.1 5432; then
    if ! command -v pg_ctlcluster >/dev/null || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
        apt_install postgresql
    fi
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    say "starting PostgreSQL $version on 127.0.0.1:5432"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null \
        || pg_ctlcluster "$version" main start \
        || die "PostgreSQL did not start; run: pg_ctlcluster $version main start"
    wait_port 127.0.0.1 5432 PostgreSQL
fi
if ! psql -h 127.0.0.1 -U postgres -d test -c 'select 1' >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ] && command -v runuser >/dev/null; then
        runuser -u postgres -- psql -q -c "ALTER ROLE postgres PASSWORD 'postgres'" >/dev/null 2>&1 || true
        runuser -u postgres -- createdb test 2>/dev/null || true
    fi
    PGPASSWORD=postgres psql -h 127.0.0.1 -U postgres -d test -c 'select 1' >/dev/null 2>&1 \
        || die "cannot reach PostgreSQL database test on 127.0.0.1:5432 as postgres; run: sudo -u postgres createdb test"
    export PGPASSWORD=postgres
fi
export CLOAKROOM_TEST_POSTGRES=${CLOAKROOM_TEST_POSTGRES:-postgres://postgres:${PGPASSWORD:-postgres}@127.0.0.1:5432/test}
