//! Who may use the dashboard: a person who knows the agent's app-key, or who
//! holds the one-time link printed at start. Either gets a session: a random
//! token kept here and in a cookie (`HttpOnly`, `SameSite=Strict`) that every
//! API call must carry. Sessions live in memory: a restarted agent asks again.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use rand::RngCore;

/// The session cookie's name.
pub const COOKIE: &str = "golem_dashboard_session";
/// Sessions kept; the oldest is dropped beyond it.
const MAX_SESSIONS: usize = 64;

pub struct Sessions {
    app_key: String,
    sessions: Mutex<VecDeque<String>>,
    login_tokens: Mutex<HashSet<String>>,
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Compare without stopping at the first difference.
fn same_secret(given: &str, expected: &str) -> bool {
    given.len() == expected.len()
        && given
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |difference, (a, b)| difference | (a ^ b))
            == 0
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Sessions {
    pub fn new(app_key: &str) -> Sessions {
        Sessions {
            app_key: app_key.to_string(),
            sessions: Mutex::new(VecDeque::new()),
            login_tokens: Mutex::new(HashSet::new()),
        }
    }

    /// A token for one login by link (`/login?token=...`).
    pub fn one_time_token(&self) -> String {
        let token = random_token();
        lock(&self.login_tokens).insert(token.clone());
        token
    }

    fn open_session(&self) -> String {
        let session = random_token();
        let mut sessions = lock(&self.sessions);
        if sessions.len() == MAX_SESSIONS {
            sessions.pop_front();
        }
        sessions.push_back(session.clone());
        session
    }

    /// A new session for a login token, which is used up.
    pub fn login_with_token(&self, token: &str) -> Option<String> {
        lock(&self.login_tokens)
            .remove(token)
            .then(|| self.open_session())
    }

    /// A new session for the right app-key.
    pub fn login_with_key(&self, app_key: &str) -> Option<String> {
        same_secret(app_key, &self.app_key).then(|| self.open_session())
    }

    pub fn is_valid(&self, session: &str) -> bool {
        lock(&self.sessions)
            .iter()
            .any(|known| same_secret(session, known))
    }

    pub fn close(&self, session: &str) {
        lock(&self.sessions).retain(|known| known != session);
    }
}

/// The `Set-Cookie` value of a session.
pub fn session_cookie(session: &str) -> String {
    format!("{COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict")
}

/// The `Set-Cookie` value that ends a session in the browser.
pub fn expired_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_login_token_works_once_and_a_wrong_key_gets_nothing() {
        let sessions = Sessions::new("secret-key");
        let token = sessions.one_time_token();
        let session = sessions.login_with_token(&token).unwrap();
        assert!(sessions.is_valid(&session));
        assert!(sessions.login_with_token(&token).is_none(), "used up");
        assert!(sessions.login_with_key("secret-kez").is_none());
        assert!(sessions.login_with_key("").is_none());
        let other = sessions.login_with_key("secret-key").unwrap();
        assert_ne!(session, other);
        sessions.close(&session);
        assert!(!sessions.is_valid(&session));
        assert!(sessions.is_valid(&other));
        assert!(!sessions.is_valid("guess"));
        let cookie = session_cookie(&other);
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
            "{cookie}"
        );
    }
}
