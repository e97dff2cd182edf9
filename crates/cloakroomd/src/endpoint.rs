//! Endpoints: which are safe without CURVE, and the mode of ipc socket files.

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind};

/// How an endpoint is reached, for the security rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reach {
    /// `ipc://PATH`: the socket file.
    Ipc(PathBuf),
    /// `inproc://`, or tcp on a loopback address.
    Local,
    /// tcp on any other address (a wildcard, an interface name, a host name).
    Network,
}

/// Classifies an endpoint.
///
/// # Errors
/// [`ErrorKind::Config`] for a transport the daemon does not serve.
pub(crate) fn reach(endpoint: &str) -> Result<Reach, Error> {
    let Some((transport, rest)) = endpoint.split_once("://") else {
        return Err(Error::new(
            ErrorKind::Config,
            format!(
                "endpoint `{endpoint}` is not TRANSPORT://ADDRESS (ipc://PATH or tcp://HOST:PORT)"
            ),
        ));
    };
    match transport {
        "ipc" => {
            if rest.is_empty() || rest.starts_with('@') {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!("endpoint `{endpoint}`: an ipc endpoint needs a file path (abstract sockets have no file mode)"),
                ));
            }
            Ok(Reach::Ipc(PathBuf::from(rest)))
        }
        "inproc" => Ok(Reach::Local),
        "tcp" => {
            // tcp://HOST:PORT, HOST an IPv4, [IPv6], '*', an interface or a name; libzmq also
            // takes tcp://SOURCE;HOST:PORT, which we treat by its last part.
            let host_port = rest.rsplit(';').next().unwrap_or(rest);
            let host = match host_port.rsplit_once(':') {
                Some((host, _port)) => host,
                None => host_port,
            };
            let host = host.trim_start_matches('[').trim_end_matches(']');
            match host.parse::<IpAddr>() {
                Ok(ip) if ip.is_loopback() => Ok(Reach::Local),
                _ if host == "localhost" => Ok(Reach::Local),
                _ => Ok(Reach::Network),
            }
        }
        other => Err(Error::new(
            ErrorKind::Config,
            format!(
                "endpoint `{endpoint}`: transport `{other}` is not served; use ipc:// or tcp://"
            ),
        )),
    }
}

/// The refusal for a network endpoint without CURVE.
pub(crate) fn insecure(endpoint: &str) -> Error {
    Error::new(
        ErrorKind::Insecure,
        format!(
            "refusing to bind {endpoint} without CURVE: any host that can reach it could open, \
             end and revoke every session. Bind ipc:// or tcp://127.0.0.1 instead, or configure \
             CURVE in the config file: [curve] secret_key_file = \"/path/curve.key\" (created on \
             first start) and allowed_clients = [\"<client public key, Z85>\"] or \
             allowed_clients_file = \"/path/clients\" (see docs/daemon.md)"
        ),
    )
}

/// Gives an ipc socket file its mode: 0600, or 0660 and the group `group`.
pub(crate) fn secure_socket_file(path: &Path, group: Option<u32>) -> Result<(), Error> {
    let io = |what: &str, e: std::io::Error| {
        Error::new(
            ErrorKind::Io,
            format!("cannot {what} of socket file {}", path.display()),
        )
        .with_source(e)
    };
    if let Some(gid) = group {
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(|e| io("set the group", e))?;
    }
    let mode = if group.is_some() { 0o660 } else { 0o600 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| io("set the mode", e))
}

/// The id of a group, by name or number.
pub(crate) fn group_id(name: &str) -> Result<u32, Error> {
    if let Ok(n) = name.parse::<u32>() {
        return Ok(n);
    }
    // /etc/group: name:password:gid:members
    let text = std::fs::read_to_string("/etc/group").map_err(|e| {
        Error::new(
            ErrorKind::Config,
            "cannot read /etc/group to find socket_group",
        )
        .with_source(e)
    })?;
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let n = f.next()?;
            let gid = f.nth(1)?.parse::<u32>().ok()?;
            (n == name).then_some(gid)
        })
        .next()
        .ok_or_else(|| {
            Error::new(
                ErrorKind::Config,
                format!(
                    "socket_group `{name}` is not a group in /etc/group (give a name or a number)"
                ),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_local_and_the_rest_is_network() {
        for local in [
            "tcp://127.0.0.1:5555",
            "tcp://127.0.0.1:*",
            "tcp://[::1]:5555",
            "tcp://localhost:1",
            "inproc://x",
        ] {
            assert_eq!(reach(local).unwrap(), Reach::Local, "{local}");
        }
        for net in [
            "tcp://0.0.0.0:5555",
            "tcp://*:5555",
            "tcp://eth0:5555",
            "tcp://192.168.1.2:5555",
            "tcp://[::]:5555",
            "tcp://example.com:5555",
        ] {
            assert_eq!(reach(net).unwrap(), Reach::Network, "{net}");
        }
        assert_eq!(
            reach("ipc:///tmp/a.sock").unwrap(),
            Reach::Ipc("/tmp/a.sock".into())
        );
        assert!(reach("udp://x:1").is_err());
        assert!(reach("nonsense").is_err());
        assert!(reach("ipc://@abstract").is_err());
    }
}
