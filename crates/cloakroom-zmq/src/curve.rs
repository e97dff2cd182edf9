//! CURVE keys and a ZAP allow-list handler.
//!
//! A CURVE server only authenticates clients through a ZAP handler, and by default libzmq
//! accepts every client that knows the server's public key when no handler is bound. So
//! CURVE here fails closed, whatever happens to the handler:
//!
//! - [`Socket::curve_server`] takes a [`ZapHandler`] (the type system makes "CURVE without
//!   an allow-list" impossible to write) and the socket keeps it alive: dropping the
//!   caller's handle, even as a temporary in the same statement, stops nothing;
//! - it sets `ZMQ_ZAP_ENFORCE_DOMAIN`, so with no handler bound (its task killed, its
//!   runtime shut down, a handler of another context) libzmq refuses every client;
//! - the handler never stops on an error: it logs it (`tracing`) and goes on, and it
//!   answers a malformed request "400", never "200".

use std::collections::HashSet;
use std::fmt;
use std::os::raw::{c_char, c_int};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

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

    /// The key pair of a secret key (32 bytes, e.g. read from a key file), its public half
    /// derived by libzmq (`zmq_curve_public`).
    ///
    /// # Errors
    /// [`ErrorKind::Unsupported`] when the linked libzmq has no CURVE.
    pub fn from_secret_key(secret: [u8; 32]) -> Result<Self> {
        if !curve_available() {
            return Err(Error::new(ErrorKind::Unsupported, "CURVE"));
        }
        let secret = zeroize::Zeroizing::new(secret);
        // zmq_curve_public reads and writes Z85 text: 40 characters and a terminating NUL.
        let secret_z85 = zeroize::Zeroizing::new(
            zmq::z85_encode(&secret[..])
                .map_err(|_| Error::new(ErrorKind::Invalid, "secret key"))?,
        );
        let mut secret_c = zeroize::Zeroizing::new([0u8; 41]);
        secret_c[..40].copy_from_slice(secret_z85.as_bytes());
        let mut public_c = [0u8; 41];
        // SAFETY: both buffers are 41 bytes, what zmq_curve_public reads (40 Z85 characters
        // and a NUL, which `secret_c` has) and writes (the same); they live on our stack
        // for the whole call and do not overlap.
        let rc =
            unsafe { zmq_curve_public(public_c.as_mut_ptr().cast(), secret_c.as_ptr().cast()) };
        if rc != 0 {
            return Err(Error::new(ErrorKind::Invalid, "zmq_curve_public"));
        }
        let public_text = std::str::from_utf8(&public_c[..40])
            .map_err(|_| Error::new(ErrorKind::Invalid, "zmq_curve_public"))?;
        let public: [u8; 32] = zmq::z85_decode(public_text)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| Error::new(ErrorKind::Invalid, "zmq_curve_public"))?;
        Ok(CurveKeyPair {
            public,
            secret: *secret,
        })
    }

    /// The secret key in Z85 text (40 characters), to write to a private key file.
    pub fn secret_z85(&self) -> zeroize::Zeroizing<String> {
        zeroize::Zeroizing::new(zmq::z85_encode(&self.secret).unwrap_or_default())
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
    malformed: AtomicU64,
    errors: AtomicU64,
}

// zmq-sys declares zmq_curve_public but does not export it; libzmq (>= 4.2.1) has it.
extern "C" {
    fn zmq_curve_public(z85_public_key: *mut c_char, z85_secret_key: *const c_char) -> c_int;
}

/// The libzmq ZAP endpoint every socket of a context asks before it accepts a CURVE client.
const ZAP_ENDPOINT: &str = "inproc://zeromq.zap.01";

/// A ZAP handler (RFC 27) answering from an allow-list of CURVE client public keys. It runs
/// as a task on the current tokio runtime, on a ROUTER bound to `inproc://zeromq.zap.01` in
/// one context.
///
/// It stops when the last of this handle and the CURVE server sockets given it with
/// [`Socket::curve_server`] is dropped: a server socket keeps its handler alive. If it stops
/// some other way (its runtime shuts down), CURVE servers refuse every client.
pub struct ZapHandler {
    guard: ZapGuard,
}

/// Shared ownership of a running ZAP handler task: the task is stopped when the last one is
/// dropped. Held by the [`ZapHandler`] handle and by every CURVE server socket that uses it.
#[derive(Clone)]
pub(crate) struct ZapGuard {
    inner: Arc<ZapTask>,
}

struct ZapTask {
    task: tokio::task::JoinHandle<()>,
    counts: Arc<ZapCounts>,
}

impl Drop for ZapTask {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl fmt::Debug for ZapHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZapHandler")
            .field("allowed", &self.allowed())
            .field("denied", &self.denied())
            .field("malformed", &self.malformed())
            .field("running", &self.is_running())
            .finish_non_exhaustive()
    }
}

/// Pause after a receive error before the next receive, so a persistent error cannot spin.
const ZAP_ERROR_PAUSE: Duration = Duration::from_millis(10);

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
            // Replies go through the socket's own bounded, per-peer reply queue: a peer of
            // the ZAP endpoint that never reads cannot stall the answers to the others.
            let replies = sock.reply_sender();
            loop {
                let req = match sock.recv().await {
                    Ok(req) => req,
                    Err(e) if e.kind() == ErrorKind::Closed => {
                        tracing::error!(
                            error = %e,
                            "ZAP handler stopped: its context is closed; CURVE servers refuse every client"
                        );
                        return;
                    }
                    Err(e) => {
                        c.errors.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(error = %e, "ZAP handler: receive failed; serving on");
                        tokio::time::sleep(ZAP_ERROR_PAUSE).await;
                        continue;
                    }
                };
                match zap_reply(&req, &allowed, &c) {
                    Some(reply) => {
                        if let Err(e) = replies.send(reply) {
                            c.errors.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(
                                error = %e,
                                "ZAP handler: reply not queued; that client is refused"
                            );
                        }
                    }
                    None => tracing::warn!(
                        frames = req.len(),
                        "ZAP handler: malformed request with no address to answer; dropped"
                    ),
                }
            }
        });
        Ok(ZapHandler {
            guard: ZapGuard {
                inner: Arc::new(ZapTask { task, counts }),
            },
        })
    }

    fn counts(&self) -> &ZapCounts {
        &self.guard.inner.counts
    }

    /// Clients accepted so far.
    pub fn allowed(&self) -> u64 {
        self.counts().allowed.load(Ordering::Relaxed)
    }

    /// Clients refused so far (malformed requests answered "400" included).
    pub fn denied(&self) -> u64 {
        self.counts().denied.load(Ordering::Relaxed)
    }

    /// Malformed ZAP requests seen so far (answered "400" when they carry an address,
    /// dropped otherwise).
    pub fn malformed(&self) -> u64 {
        self.counts().malformed.load(Ordering::Relaxed)
    }

    /// Receive or reply errors the handler logged and served on after.
    pub fn errors(&self) -> u64 {
        self.counts().errors.load(Ordering::Relaxed)
    }

    /// Whether the handler's task still runs (false once it was stopped or its runtime
    /// shut down).
    pub fn is_running(&self) -> bool {
        !self.guard.inner.task.is_finished()
    }

    /// Test-only: stops the handler's task as a crash would, while every handle and server
    /// socket still holds it.
    #[cfg(feature = "broken-variants")]
    #[doc(hidden)]
    pub fn abort_task(&self) {
        self.guard.inner.task.abort();
    }
}

/// Builds the reply to one ZAP request `[peer]["" ]["1.0"][id][domain][address][identity]
/// [mechanism][credentials...]`. A malformed request that still carries an address (peer,
/// empty delimiter, version, request id) is answered "400"; one without is `None` (there is
/// nobody to answer).
fn zap_reply(
    req: &[zmq::Message],
    allowed: &HashSet<[u8; 32]>,
    counts: &ZapCounts,
) -> Option<Vec<zmq::Message>> {
    let well_formed = req.len() >= 8 && req[1].is_empty() && &req[2][..] == b"1.0";
    if !well_formed {
        counts.malformed.fetch_add(1, Ordering::Relaxed);
        if req.len() < 4 || !req[1].is_empty() {
            return None;
        }
    }
    let mechanism: &[u8] = if well_formed { &req[7][..] } else { b"" };
    let ok = well_formed
        && mechanism == b"CURVE"
        && req.len() == 9
        && <[u8; 32]>::try_from(&req[8][..]).is_ok_and(|key| allowed.contains(&key));
    let (code, text): (&[u8], &[u8]) = if ok {
        counts.allowed.fetch_add(1, Ordering::Relaxed);
        (b"200", b"OK")
    } else if well_formed {
        counts.denied.fetch_add(1, Ordering::Relaxed);
        (b"400", b"not allowed")
    } else {
        counts.denied.fetch_add(1, Ordering::Relaxed);
        (b"400", b"malformed ZAP request")
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

/// `ZMQ_ZAP_ENFORCE_DOMAIN` (libzmq >= 4.3; the `zmq` crate does not wrap it).
const ZMQ_ZAP_ENFORCE_DOMAIN: c_int = 93;

impl Socket {
    /// Makes this socket a CURVE server with `keys`, authenticating clients through
    /// `zap`, which must run in the same context. Call before `bind`.
    ///
    /// Fails closed: the socket keeps `zap` running at least as long as itself (dropping
    /// the caller's handle stops nothing), and it sets `ZMQ_ZAP_ENFORCE_DOMAIN`, so if no
    /// handler answers in this context (its task killed, its runtime shut down, or `zap`
    /// belongs to another context) libzmq refuses every client instead of admitting it.
    ///
    /// # Errors
    /// [`ErrorKind::Unsupported`] without CURVE in libzmq, or with a libzmq that has no
    /// `ZMQ_ZAP_ENFORCE_DOMAIN` (older than 4.3): no CURVE server is made then.
    pub fn curve_server(&mut self, keys: &CurveKeyPair, zap: &ZapHandler) -> Result<()> {
        if !curve_available() {
            return Err(Error::new(ErrorKind::Unsupported, "CURVE"));
        }
        #[cfg(feature = "broken-variants")]
        let fails_open = self.broken() == crate::socket::Broken::CurveFailsOpen;
        #[cfg(not(feature = "broken-variants"))]
        let fails_open = false;
        if !fails_open {
            self.set_zap_enforce_domain()?;
        }
        let s = self.get_ref();
        s.set_zap_domain("cloakroom")
            .map_err(|e| Error::zmq("ZMQ_ZAP_DOMAIN", e))?;
        s.set_curve_server(true)
            .map_err(|e| Error::zmq("ZMQ_CURVE_SERVER", e))?;
        s.set_curve_secretkey(&keys.secret)
            .map_err(|e| Error::zmq("ZMQ_CURVE_SECRETKEY", e))?;
        if !fails_open {
            self.keep_zap(zap.guard.clone());
        }
        Ok(())
    }

    /// Sets `ZMQ_ZAP_ENFORCE_DOMAIN` to 1 through the raw libzmq call.
    fn set_zap_enforce_domain(&mut self) -> Result<()> {
        let on: c_int = 1;
        let sock = self.raw_socket();
        // SAFETY: `sock` is the live libzmq socket this `Socket` owns (closed only when the
        // `Socket` is dropped; `&mut self` is held across the call, so no other code uses it
        // meanwhile); `optval` points to one initialised c_int on our stack and `optvallen`
        // is its size, which is what libzmq reads for this integer option.
        let rc = unsafe {
            zmq_sys::zmq_setsockopt(
                sock,
                ZMQ_ZAP_ENFORCE_DOMAIN,
                (&on as *const c_int).cast(),
                std::mem::size_of::<c_int>(),
            )
        };
        if rc != 0 {
            let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
            return Err(match zmq::Error::from_raw(errno) {
                zmq::Error::EINVAL => Error::new(
                    ErrorKind::Unsupported,
                    "ZMQ_ZAP_ENFORCE_DOMAIN (libzmq older than 4.3): CURVE would fail open",
                ),
                e => Error::zmq("ZMQ_ZAP_ENFORCE_DOMAIN", e),
            });
        }
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
    fn malformed_zap_requests_are_denied_never_allowed() {
        let counts = ZapCounts::default();
        let allowed: HashSet<[u8; 32]> = [[1u8; 32]].into_iter().collect();
        // With an address (peer, delimiter, version, request id): answered 400, even when
        // the key in it is allowed.
        let short = zap_reply(&request(b"CURVE", &[1u8; 32])[..5], &allowed, &counts).unwrap();
        assert_eq!(status(&short), b"400");
        assert_eq!(&short[3][..], b"req-7");
        let mut bad_version = request(b"CURVE", &[1u8; 32]);
        bad_version[2] = zmq::Message::from(&b"2.0"[..]);
        let reply = zap_reply(&bad_version, &allowed, &counts).unwrap();
        assert_eq!(status(&reply), b"400");
        assert!(reply[6].is_empty(), "no user id for a refused client");
        let mut extra = request(b"CURVE", &[1u8; 32]);
        extra.push(zmq::Message::from(&b"extra"[..]));
        assert_eq!(
            status(&zap_reply(&extra, &allowed, &counts).unwrap()),
            b"400"
        );
        // Without one: nobody to answer.
        assert!(zap_reply(&request(b"CURVE", &[1u8; 32])[..3], &allowed, &counts).is_none());
        let mut no_delimiter = request(b"CURVE", &[1u8; 32]);
        no_delimiter[1] = zmq::Message::from(&b"x"[..]);
        assert!(zap_reply(&no_delimiter, &allowed, &counts).is_none());
        assert_eq!(counts.allowed.load(Ordering::Relaxed), 0);
        assert_eq!(counts.malformed.load(Ordering::Relaxed), 4);
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
