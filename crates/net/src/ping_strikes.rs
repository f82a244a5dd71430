//! When a connection whose pings fail is closed. One failed ping used to close
//! it at once; in the scale lab (50 daemons, 50 ms links with loss, a busy
//! machine) that tore down dozens of healthy connections, gossip meshes with
//! them, in a quarter of an hour. A connection is now closed after
//! [`PING_FAILURES_BEFORE_CLOSE`] failed pings in a row; any answered ping
//! clears its count. Pure bookkeeping: the node asks and closes.

use std::collections::HashMap;

use libp2p::swarm::ConnectionId;

/// Failed pings in a row after which a connection is closed.
pub const PING_FAILURES_BEFORE_CLOSE: u32 = 3;

/// Consecutive ping failures per open connection.
#[derive(Debug, Default)]
pub struct PingStrikes {
    failures: HashMap<ConnectionId, u32>,
}

impl PingStrikes {
    /// A ping on `connection` failed; true when the connection should be closed now.
    pub fn failed(&mut self, connection: ConnectionId) -> bool {
        let failures = self.failures.entry(connection).or_insert(0);
        *failures += 1;
        if *failures >= PING_FAILURES_BEFORE_CLOSE {
            self.failures.remove(&connection);
            return true;
        }
        false
    }

    /// A ping on `connection` was answered: its count starts again.
    pub fn answered(&mut self, connection: ConnectionId) {
        self.failures.remove(&connection);
    }

    /// `connection` is gone; forget it.
    pub fn closed(&mut self, connection: ConnectionId) {
        self.failures.remove(&connection);
    }

    /// Connections with failures counted (nothing is kept for closed ones).
    #[cfg(test)]
    pub fn tracked(&self) -> usize {
        self.failures.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_closed_only_after_failures_in_a_row() {
        let mut strikes = PingStrikes::default();
        let connection = ConnectionId::new_unchecked(1);
        assert!(!strikes.failed(connection));
        assert!(!strikes.failed(connection));
        strikes.answered(connection);
        assert!(
            !strikes.failed(connection),
            "an answer starts the count again"
        );
        assert!(!strikes.failed(connection));
        assert!(
            strikes.failed(connection),
            "the third failure in a row closes it"
        );
        assert_eq!(strikes.tracked(), 0);
    }

    #[test]
    fn connections_are_counted_apart_and_forgotten_when_closed() {
        let mut strikes = PingStrikes::default();
        let (first, second) = (
            ConnectionId::new_unchecked(1),
            ConnectionId::new_unchecked(2),
        );
        assert!(!strikes.failed(first));
        assert!(!strikes.failed(first));
        assert!(
            !strikes.failed(second),
            "another connection's failures do not count"
        );
        strikes.closed(first);
        strikes.closed(second);
        assert_eq!(strikes.tracked(), 0);
    }
}
