# Sourced by scripts/test. cloakroom-zmq links Debian's libzmq (4.3.4, CURVE through libsodium)
# instead of zmq-sys's vendored build, which has no CURVE: see .cargo/config.toml and the
# crate docs of cloakroom-zmq. libzmq3-dev brings the link-time name libzmq.so and pulls in
# libzmq5 and libsodium23.
apt_install libzmq3-dev
