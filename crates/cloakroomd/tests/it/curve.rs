//! A network endpoint with CURVE: allowed clients are served, others refused.

use std::time::Duration;

use cloakroom_proto::{Reply, Request, Verb};
use cloakroom_zmq::zmq;

use crate::support::{Client, InProcess};

fn curve_client(
    ctx: &zmq::Context,
    endpoint: &str,
    server: &[u8],
    keys: &zmq::CurveKeyPair,
) -> Client {
    let sock = ctx.socket(zmq::DEALER).unwrap();
    sock.set_linger(0).unwrap();
    sock.set_rcvtimeo(1500).unwrap();
    sock.set_curve_serverkey(server).unwrap();
    sock.set_curve_publickey(&keys.public_key).unwrap();
    sock.set_curve_secretkey(&keys.secret_key).unwrap();
    sock.connect(endpoint).unwrap();
    Client::from_socket(sock)
}

#[test]
fn a_curve_endpoint_serves_allowed_clients_only() {
    assert!(
        cloakroom_zmq::curve_available(),
        "the linked libzmq has no CURVE: scripts/setup.d/20-zmq.sh"
    );
    let allowed = zmq::CurveKeyPair::new().unwrap();
    let stranger = zmq::CurveKeyPair::new().unwrap();
    let key_dir = tempfile::tempdir().unwrap();
    let key_file = key_dir.path().join("curve.key");
    let d = InProcess::start_with(|c| {
        c.bind = vec!["tcp://0.0.0.0:*".into(), "tcp://127.0.0.1:*".into()];
        c.curve = Some(cloakroomd::CurveConfig {
            secret_key_file: Some(key_file.clone()),
            allowed_clients: vec![zmq::z85_encode(&allowed.public_key).unwrap()],
            ..Default::default()
        });
    });
    let server = zmq::z85_decode(d.daemon().curve_public_key().unwrap()).unwrap();
    let port = d.daemon().endpoints()[0]
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned();
    let ep = format!("tcp://127.0.0.1:{port}");
    let mut ok = curve_client(&d.ctx, &ep, &server, &allowed);
    assert!(matches!(ok.call(&Request::Ping), Reply::Pong { .. }));
    let mut refused = curve_client(&d.ctx, &ep, &server, &stranger);
    refused.send(&Request::Ping);
    assert!(
        refused.recv(Verb::Ping).is_none(),
        "an unknown key must be refused"
    );
    // Without CURVE at all: refused too.
    let mut plain = Client::connect_with(&d.ctx, &ep, Duration::from_millis(1500));
    plain.send(&Request::Ping);
    assert!(plain.recv(Verb::Ping).is_none());
    // The loopback endpoint of the same daemon stays plain.
    let mut local = Client::connect(&d.ctx, &d.daemon().endpoints()[1]);
    assert!(matches!(local.call(&Request::Ping), Reply::Pong { .. }));
    // The key file was created 0600 and is used again on the next start.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
}
