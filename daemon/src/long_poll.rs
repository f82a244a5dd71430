//! The one long-poll of the daemon's services: look for items, and while there
//! are none, wait for the service's change signal (a `watch` the actor bumps
//! after each change) until a deadline. The look runs outside the actor (a
//! message to it, or a read of what it committed), so a waiting client never
//! occupies the actor.

use std::future::Future;

use golem_model::GolemError;
use tokio::sync::watch;
use tokio::time::Instant;

/// `look()` again after every change on `changed` until it finds something
/// or `deadline` passes (then: nothing). Subscribe `changed` before the first
/// look, so a change between the look and the wait is not missed.
pub async fn until_found<S, T, F, Fut>(
    deadline: Instant,
    changed: &mut watch::Receiver<S>,
    mut look: F,
) -> Result<Vec<T>, GolemError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Vec<T>, GolemError>>,
{
    loop {
        let found = look().await?;
        if !found.is_empty() {
            return Ok(found);
        }
        match tokio::time::timeout_at(deadline, changed.changed()).await {
            Ok(Ok(())) => continue,
            Ok(Err(_)) | Err(_) => return Ok(Vec::new()),
        }
    }
}
