//! Readiness for a service manager: the sd_notify protocol of systemd's
//! `Type=notify` units, over the Unix datagram socket the manager names in
//! `NOTIFY_SOCKET` (a path, or `@name` for an abstract socket). The daemon
//! sends `READY=1` once its REST API listens and `STOPPING=1` when it begins to
//! stop. Without a socket (not run by systemd) nothing is sent. It never fails
//! the daemon: a manager that does not read its socket only costs a warning.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

/// Where the service manager listens for notifications, if it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemdNotifier {
    socket: NotifySocket,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum NotifySocket {
    Path(PathBuf),
    /// Linux abstract namespace: `@name` in `NOTIFY_SOCKET`, without the `@`.
    Abstract(Vec<u8>),
}

impl SystemdNotifier {
    /// From the value of `NOTIFY_SOCKET`; `None` when it is unset or empty.
    pub fn from_env_value(value: Option<&str>) -> Option<SystemdNotifier> {
        let value = value?.trim();
        let socket = match value.strip_prefix('@') {
            Some(name) if !name.is_empty() => NotifySocket::Abstract(name.as_bytes().to_vec()),
            Some(_) => return None,
            None if value.is_empty() => return None,
            None => NotifySocket::Path(PathBuf::from(value)),
        };
        Some(SystemdNotifier { socket })
    }

    /// Send `state` (newline-separated `KEY=VALUE` assignments) in one datagram.
    pub fn notify(&self, state: &str) -> std::io::Result<()> {
        let sender = UnixDatagram::unbound()?;
        match &self.socket {
            NotifySocket::Path(path) => sender.send_to(state.as_bytes(), path)?,
            NotifySocket::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                sender.send_to_addr(state.as_bytes(), &address)?
            }
        };
        Ok(())
    }

    /// [`notify`](Self::notify), logging a failure instead of returning it.
    pub fn notify_or_warn(&self, state: &str) {
        if let Err(error) = self.notify(state) {
            tracing::warn!(%error, socket = ?self.socket, state, "cannot notify the service manager");
        }
    }

    /// `READY=1` with a status line naming the API address.
    pub fn ready(&self, api_addr: std::net::SocketAddr) {
        self.notify_or_warn(&format!(
            "READY=1\nSTATUS=REST API listening on {api_addr}\nMAINPID={}",
            std::process::id()
        ));
    }

    pub fn stopping(&self) {
        self.notify_or_warn("STOPPING=1\nSTATUS=stopping");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn unset_or_empty_socket_means_no_manager() {
        assert_eq!(SystemdNotifier::from_env_value(None), None);
        assert_eq!(SystemdNotifier::from_env_value(Some("")), None);
        assert_eq!(SystemdNotifier::from_env_value(Some("@")), None);
    }

    #[test]
    fn ready_reaches_a_path_socket_and_an_abstract_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let receiver = UnixDatagram::bind(&path).unwrap();
        let notifier = SystemdNotifier::from_env_value(path.to_str()).unwrap();
        notifier.ready("127.0.0.1:7465".parse().unwrap());
        let mut buffer = [0u8; 512];
        let length = receiver.recv(&mut buffer).unwrap();
        let text = std::str::from_utf8(&buffer[..length]).unwrap();
        assert!(text.starts_with("READY=1\n"), "{text}");
        assert!(text.contains("127.0.0.1:7465"), "{text}");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("golem-notify-test-{}", std::process::id());
        let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let receiver = UnixDatagram::bind_addr(&address).unwrap();
        let notifier = SystemdNotifier::from_env_value(Some(&format!("@{name}"))).unwrap();
        notifier.stopping();
        let length = receiver.recv(&mut buffer).unwrap();
        assert!(buffer[..length].starts_with(b"STOPPING=1"));
    }

    #[test]
    fn a_missing_socket_is_an_error_not_a_panic() {
        let notifier = SystemdNotifier::from_env_value(Some("/nonexistent/notify.sock")).unwrap();
        assert!(notifier.notify("READY=1").is_err());
        notifier.notify_or_warn("READY=1");
    }
}
