//! CURVE keys and a ZAP allow-list handler.
//!
//! A CURVE server only authenticates clients through a ZAP handler: without one, libzmq
//! accepts every client that knows the server's public key. So [`Socket::curve_server`]
//! takes a [`ZapHandler`], which must be running in the same context: the type system makes
//! "CURVE without an allow-list" impossible to write.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use zeroize::Zeroize;

use crate::error::{Error, ErrorKind, Result};
use crate::socket::{Socket, SocketKind};

/// True when the linked libzmq was built with CURVE (Debian's libzmq5 is; zmq-sys's
/// vendored build is not, see the crate docs).
pub fn curve_available() -> bool {
    zmq::has("curve").unwrap_or(false)
}

/// A CURVE key pair. The secret half has no Debug output and is zeroed on drop.
pub struct CurveKeyPair {
    public: [u8; 32],
    secret: [u8; 32],
}

impl fmt::Debug for CurveKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self { public, secret: _ } = self;
        f.debug_struct("CurveKeyPair")
            .field("public", &zmq::z85_encode(public).unwrap_or_default())
            .finish_non_exhaustive()
    }
}

impl Drop for CurveKeyPair {
    fn drop(&mut self) {
        self.secret.zeroize();
    }
}

impl CurveKeyPair {
    /// A fresh key pair from libzmq (libsodium's random source).
    ///
    /// # Errors
    /// [`ErrorKind::Unsupported`] when the linked libzmq has no CURVE.
    pub fn generate() -> Result<Self> {
        if !curve_available() {
            return Err(Error::new(ErrorKind::Unsupported, "CURVE"));
        }
        let mut pair = zmq::CurveKeyPair::new().map_err(|e| Error::zmq("zmq_curve_keypair", e))?;
        let keys = CurveKeyPair {
            public: pair.public_key,
            secret: pair.secret_key,
        };
        pair.secret_key.zeroize();
        Ok(keys)
    }

    /// The public key (32 bytes), the part clients are allow-listed by.
    pub fn public_key(&self) -> [u8; 32] {
        self.public
    }

    /// The public key in Z85 text (40 characters), as libzmq tools print it.
    pub fn public_z85(&self) -> String {
        zmq::z85_encode(&self.public).unwrap_or_default()
    }
}

/// Counters of a [`ZapHandler`].
#[derive(Debug, Default)]
struct ZapCounts {
    allowed: AtomicU64,
    denied: AtomicU64,
}

/// The libzmq ZAP endpoint every socket of a context asks before it accepts a CURVE client.
const ZAP_ENDPOINT: &str = "inproc://zeromq.zap.01";

/// A ZAP handler (RFC 27) answering from an allow-list of CURVE client public keys. It runs
/// as a task on the current tokio runtime, on a ROUTER bound to `inproc://zeromq.zap.01` in
/// one context; dropping the handle stops it.
pub struct ZapHandler {
    task: tokio::task::JoinHandle<()>,
    counts: Arc<ZapCounts>,
}

impl fmt::Debug for ZapHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZapHandler")
            .field("allowed", &self.allowed())
            .field("denied", &self.denied())
            .finish_non_exhaustive()
    }
}

impl Drop for ZapHandler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ZapHandler {
    /// Starts a handler in `ctx` that accepts exactly the CURVE clients whose public key is
    /// in `allowed`, and refuses every other client and mechanism.
    ///
    /// # Errors
    /// [`ErrorKind::NoRuntime`] outside tokio; libzmq's (for example when another handler
    /// is already bound in this context).
    pub fn spawn(ctx: &zmq::Context, allowed: impl IntoIterator<Item = [u8; 32]>) -> Result<Self> {
        let allowed: HashSet<[u8; 32]> = allowed.into_iter().collect();
        let mut sock = Socket::new(ctx, SocketKind::Router)?;
        sock.bind(ZAP_ENDPOINT)?;
        let counts = Arc::new(ZapCounts::default());
        let c = counts.clone();
        let task = tokio::spawn(async move {
            while let Ok(req) = sock.recv().await {
                let Some(reply) = zap_reply(&req, &allowed, &c) else {
                    continue;
                };
                if sock.send(reply).await.is_err() {
                    continue;
                }
            }
        });
        Ok(ZapHandler { task, counts })
    }

    /// Clients accepted so far.
    pub fn allowed(&self) -> u64 {
        self.counts.allowed.load(Ordering::Relaxed)
    }

    /// Clients refused so far.
    pub fn denied(&self) -> u64 {
        self.counts.denied.load(Ordering::Relaxed)
    }
}

/// Builds the reply to one ZAP request `[peer]["" ]["1.0"][id][domain][address][identity]
/// [mechanism][credentials...]`; `None` for a malformed request (not answerable).
fn zap_reply(
    req: &[zmq::Message],
    allowed: &HashSet<[u8; 32]>,
    counts: &ZapCounts,
) -> Option<Vec<zmq::Message>> {
    if req.len() < 8 || !req[1].is_empty() || &req[2][..] != b"1.0" {
        return None;
    }
    let mechanism = &req[7][..];
    let ok = mechanism == b"CURVE"
        && req.len() == 9
        && <[u8; 32]>::try_from(&req[8][..]).is_ok_and(|key| allowed.contains(&key));
    let (code, text): (&[u8], &[u8]) = if ok {
        counts.allowed.fetch_add(1, Ordering::Relaxed);
        (b"200", b"OK")
    } else {
        counts.denied.fetch_add(1, Ordering::Relaxed);
        (b"400", b"not allowed")
    };
    let user: &[u8] = if ok { &req[8][..] } else { b"" };
    Some(vec![
        zmq::Message::from(&req[0][..]),
        zmq::Message::new(),
        zmq::Message::from(&b"1.0"[..]),
        zmq::Message::from(&req[3][..]),
        zmq::Message::from(code),
        zmq::Message::from(text),
        zmq::Message::from(user),
        zmq::Message::new(),
    ])
}

impl Socket {
    /// Makes this socket a CURVE server with `keys`, authenticating clients through
    /// `zap`, which must run in the same context. Call before `bind`.
    ///
    /// # Errors
    /// [`ErrorKind::Unsupported`] without CURVE in libzmq. libzmq does not let us check that
    /// `zap` runs in this socket's context: passing one of another context leaves this
    /// socket without an allow-list.
    pub fn curve_server(&self, keys: &CurveKeyPair, zap: &ZapHandler) -> Result<()> {
        if !curve_available() {
            return Err(Error::new(ErrorKind::Unsupported, "CURVE"));
        }
        let _running_in_this_context: &ZapHandler = zap;
        let s = self.get_ref();
        s.set_zap_domain("cloakroom")
            .map_err(|e| Error::zmq("ZMQ_ZAP_DOMAIN", e))?;
        s.set_curve_server(true)
            .map_err(|e| Error::zmq("ZMQ_CURVE_SERVER", e))?;
        s.set_curve_secretkey(&keys.secret)
            .map_err(|e| Error::zmq("ZMQ_CURVE_SECRETKEY", e))?;
        Ok(())
    }

    /// Makes this socket a CURVE client with `keys`, expecting the server `server_public`.
    /// Call before `connect`.
    ///
    /// # Errors
    /// [`ErrorKind::Unsupported`] without CURVE in libzmq.
    pub fn curve_client(&self, keys: &CurveKeyPair, server_public: &[u8; 32]) -> Result<()> {
        if !curve_available() {
            return Err(Error::new(ErrorKind::Unsupported, "CURVE"));
        }
        let s = self.get_ref();
        s.set_curve_serverkey(server_public)
            .map_err(|e| Error::zmq("ZMQ_CURVE_SERVERKEY", e))?;
        s.set_curve_publickey(&keys.public)
            .map_err(|e| Error::zmq("ZMQ_CURVE_PUBLICKEY", e))?;
        s.set_curve_secretkey(&keys.secret)
            .map_err(|e| Error::zmq("ZMQ_CURVE_SECRETKEY", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(mechanism: &[u8], credential: &[u8]) -> Vec<zmq::Message> {
        [
            &b"peer"[..],
            b"",
            b"1.0",
            b"req-7",
            b"cloakroom",
            b"127.0.0.1",
            b"",
            mechanism,
            credential,
        ]
        .iter()
        .map(|f| zmq::Message::from(*f))
        .collect()
    }

    fn status(reply: &[zmq::Message]) -> &[u8] {
        &reply[4][..]
    }

    #[test]
    fn zap_allows_listed_keys_only() {
        let counts = ZapCounts::default();
        let allowed: HashSet<[u8; 32]> = [[1u8; 32]].into_iter().collect();
        let ok = zap_reply(&request(b"CURVE", &[1u8; 32]), &allowed, &counts).unwrap();
        assert_eq!(status(&ok), b"200");
        assert_eq!(&ok[3][..], b"req-7");
        assert_eq!(&ok[6][..], &[1u8; 32]);
        let no = zap_reply(&request(b"CURVE", &[2u8; 32]), &allowed, &counts).unwrap();
        assert_eq!(status(&no), b"400");
        let short = zap_reply(&request(b"CURVE", &[1u8; 31]), &allowed, &counts).unwrap();
        assert_eq!(status(&short), b"400");
        let null = zap_reply(&request(b"NULL", b""), &allowed, &counts).unwrap();
        assert_eq!(status(&null), b"400");
        assert_eq!(counts.allowed.load(Ordering::Relaxed), 1);
        assert_eq!(counts.denied.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn malformed_zap_requests_get_no_answer() {
        let counts = ZapCounts::default();
        let allowed = HashSet::new();
        assert!(zap_reply(&request(b"CURVE", &[1u8; 32])[..5], &allowed, &counts).is_none());
        let mut bad_version = request(b"CURVE", &[1u8; 32]);
        bad_version[2] = zmq::Message::from(&b"2.0"[..]);
        assert!(zap_reply(&bad_version, &allowed, &counts).is_none());
    }

    #[test]
    fn key_pair_debug_shows_no_secret() {
        if !curve_available() {
            return assert!(CurveKeyPair::generate().is_err());
        }
        let keys = CurveKeyPair::generate().unwrap();
        let shown = format!("{keys:?}");
        assert!(shown.contains(&keys.public_z85()));
        let secret = zmq::z85_encode(&keys.secret).unwrap();
        assert!(!shown.contains(&secret));
    }
}
