//! The bridge between the bus and Actix actors. A daemon service is an actor
//! that owns its state; the bus reaches it through three pieces:
//! - [`Incoming<M>`]: a bus message `M` as the actor receives it, with its
//!   [`Caller`]; the actor's `Handler<Incoming<M>>` replies
//!   `Result<M::Reply, GolemError>`;
//! - [`ServiceEndpoint::on_actor`]: binds `M` on an endpoint to that handler, so a
//!   service's endpoint is a list of message types, not a list of closures;
//! - [`Supervised<A>`]: the address of a service actor that is started again by
//!   its factory when it dies (a panic in a handler ends the actor's task; the
//!   new actor loads its state from sled in `started()`); calls that were in
//!   flight get `Unavailable` and may be retried.
//!
//! [`ServiceArbiter`] is the thread a service actor runs on: its own
//! single-threaded Actix system, so actors run the same way under the daemon's
//! `actix_rt::System`, a `#[tokio::test]`, or any other runtime, and services
//! on different arbiters run in parallel.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use actix::dev::ToEnvelope;
use actix::{
    Actor, ActorContext, ActorFutureExt, Addr, AsyncContext, Context, Handler, MailboxError,
};
use golem_model::bus::BusMessage;
use golem_model::GolemError;

use crate::endpoint::{Caller, ServiceEndpoint};

/// A bus message delivered to an actor, with who sent it.
#[derive(Debug)]
pub struct Incoming<M> {
    pub caller: Caller,
    pub message: M,
}

impl<M: BusMessage> actix::Message for Incoming<M> {
    type Result = Result<M::Reply, GolemError>;
}

/// The failure of delivering a message to a service actor, as callers see it.
pub fn mailbox_error(service: &str, error: MailboxError) -> GolemError {
    match error {
        MailboxError::Closed => {
            GolemError::unavailable(format!("the {service} service is restarting; try again"))
        }
        MailboxError::Timeout => {
            GolemError::unavailable(format!("the {service} service did not answer in time"))
        }
    }
}

/// Something that delivers messages to the current instance of an actor.
pub trait ActorAddress<A: Actor>: Clone + Send + Sync + 'static {
    /// The address to send to now.
    fn current(&self) -> Addr<A>;
    /// The service's name, for errors.
    fn service(&self) -> &str;
    /// `addr` failed to take a message: the caller saw it closed.
    fn closed(&self, _addr: &Addr<A>) {}
}

impl ServiceEndpoint {
    /// Handle bus message `M` with actor `A`'s `Handler<Incoming<M>>`.
    pub fn on_actor<M, A, S>(self, actor: S) -> Self
    where
        M: BusMessage,
        A: Actor + Handler<Incoming<M>>,
        A::Context: ToEnvelope<A, Incoming<M>>,
        S: ActorAddress<A>,
    {
        self.on::<M, _, _>(move |caller, message| {
            let actor = actor.clone();
            async move { deliver(&actor, Incoming { caller, message }).await? }
        })
    }
}

/// Send `message` to the current instance behind `actor`; a closed mailbox is
/// reported to it (so a supervisor restarts at once) and answered Unavailable.
pub async fn deliver<A, S, M>(actor: &S, message: M) -> Result<M::Result, GolemError>
where
    A: Actor + Handler<M>,
    A::Context: ToEnvelope<A, M>,
    M: actix::Message + Send + 'static,
    M::Result: Send,
    S: ActorAddress<A>,
{
    let addr = actor.current();
    match addr.send(message).await {
        Ok(result) => Ok(result),
        Err(error) => {
            if matches!(error, MailboxError::Closed) {
                actor.closed(&addr);
            }
            Err(mailbox_error(actor.service(), error))
        }
    }
}

/// Send `message` to the current instance behind `actor` without waiting for
/// its answer, for a caller that already knows what to reply. The actor takes
/// its messages in order, so whatever the caller sends it next sees the
/// effect of this one. A closed mailbox is reported as by [`deliver`].
pub fn tell<A, S, M>(actor: &S, message: M) -> Result<(), GolemError>
where
    A: Actor + Handler<M>,
    A::Context: ToEnvelope<A, M>,
    M: actix::Message + Send + 'static,
    M::Result: Send,
    S: ActorAddress<A>,
{
    let addr = actor.current();
    if !addr.connected() {
        actor.closed(&addr);
        return Err(mailbox_error(actor.service(), MailboxError::Closed));
    }
    addr.do_send(message);
    Ok(())
}

/// Where a service's actor runs: the caller's own Actix system thread when
/// it has one (the daemon's main thread, where the router, the bus server and
/// the swarm's task run too, so a call from the network or an exe unit to an
/// actor wakes no other thread), else a thread of its own running a
/// single-threaded Actix system (tests under `#[tokio::test]`, several nodes
/// in one process). Cheap to clone; an own thread stops at
/// [`ServiceArbiter::stop`] (idempotent) or when the last clone is dropped.
#[derive(Clone)]
pub struct ServiceArbiter {
    handle: actix_rt::ArbiterHandle,
    /// `None` when the actor runs on the caller's system (it stops with it).
    thread: Option<Arc<ArbiterThread>>,
}

struct ArbiterThread {
    system: actix_rt::System,
    join: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl ArbiterThread {
    fn stop(&self) {
        self.system.stop();
        let join = self
            .join
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        let Some(join) = join else { return };
        // A thread cannot wait for itself (the last clone dropped on it).
        if join.thread().id() == std::thread::current().id() {
            return;
        }
        if join.join().is_err() {
            tracing::error!("a service thread panicked while stopping");
        }
    }
}

impl Drop for ArbiterThread {
    fn drop(&mut self) {
        self.stop();
    }
}

impl ServiceArbiter {
    /// The caller's Actix system thread when it runs on one, else a new
    /// thread named `name` ([`ServiceArbiter::spawn`]).
    pub fn current_or_spawn(name: &str) -> std::io::Result<ServiceArbiter> {
        match actix_rt::Arbiter::try_current() {
            Some(handle) if actix_rt::System::try_current().is_some() => Ok(ServiceArbiter {
                handle,
                thread: None,
            }),
            _ => Self::spawn(name),
        }
    }

    /// Start a thread named `name` running an Actix system.
    pub fn spawn(name: &str) -> std::io::Result<ServiceArbiter> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let join = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let system = actix_rt::System::new();
                let _ = ready_tx.send((actix_rt::System::current(), actix_rt::Arbiter::current()));
                if let Err(error) = system.run() {
                    tracing::error!(%error, "service arbiter ended with an error");
                }
            })?;
        let (system, handle) = ready_rx.recv().map_err(|_| {
            std::io::Error::other(format!("the service thread {name} ended before it started"))
        })?;
        Ok(ServiceArbiter {
            handle,
            thread: Some(Arc::new(ArbiterThread {
                system,
                join: std::sync::Mutex::new(Some(join)),
            })),
        })
    }

    pub fn handle(&self) -> &actix_rt::ArbiterHandle {
        &self.handle
    }

    /// Stop the thread's system and wait for the thread to end (blocks
    /// briefly: call it off async workers, e.g. in `spawn_blocking`).
    pub fn stop(&self) {
        if let Some(thread) = &self.thread {
            thread.stop();
        }
    }

    /// [`ServiceArbiter::stop`] from async code (on the blocking pool); a
    /// failure to stop is logged with the service's `name`.
    pub async fn stop_from_async(&self, name: &str) {
        let arbiter = self.clone();
        if tokio::task::spawn_blocking(move || arbiter.stop())
            .await
            .is_err()
        {
            tracing::warn!(service = name, "stopping the service thread failed");
        }
    }
}

/// An instance that lived this long is restarted at once when it dies.
const STABLE_LIFE: std::time::Duration = std::time::Duration::from_secs(10);

/// The delay before restarting after `short_lives` instances in a row died
/// young: none for the first, then 100 ms doubling up to 5 s.
fn restart_delay(short_lives: u32) -> std::time::Duration {
    if short_lives == 0 {
        return std::time::Duration::ZERO;
    }
    let doubled = 100u64.saturating_mul(1u64 << (short_lives - 1).min(16));
    std::time::Duration::from_millis(doubled.min(5_000))
}

type Factory<A> = Arc<dyn Fn() -> A + Send + Sync>;

struct SupervisedInner<A: Actor<Context = Context<A>>> {
    service: &'static str,
    arbiter: actix_rt::ArbiterHandle,
    factory: Factory<A>,
    current: RwLock<Addr<A>>,
    restarts: AtomicU64,
    stopping: AtomicBool,
    /// Instances in a row that died before [`STABLE_LIFE`].
    short_lives: std::sync::atomic::AtomicU32,
    /// Turned true by [`Supervised::stop`]: the running instance stops.
    stop: tokio::sync::watch::Sender<bool>,
}

/// A service actor started again by its factory whenever it dies: the new
/// instance loads its state from sled in `started()`. Cheap to clone.
pub struct Supervised<A: Actor<Context = Context<A>>> {
    inner: Arc<SupervisedInner<A>>,
}

impl<A: Actor<Context = Context<A>>> Clone for Supervised<A> {
    fn clone(&self) -> Self {
        Supervised {
            inner: self.inner.clone(),
        }
    }
}

impl<A: Actor<Context = Context<A>>> Supervised<A> {
    /// Start the actor built by `factory` on `arbiter`; when an instance dies
    /// (a panic in a handler or a timer), the next one starts at once.
    pub fn start(
        service: &'static str,
        arbiter: &actix_rt::ArbiterHandle,
        factory: impl Fn() -> A + Send + Sync + 'static,
    ) -> Supervised<A> {
        let factory: Factory<A> = Arc::new(factory);
        let (stop, stop_watch) = tokio::sync::watch::channel(false);
        let (addr, death) = spawn_watched(arbiter, &factory, stop_watch);
        let supervised = Supervised {
            inner: Arc::new(SupervisedInner {
                service,
                arbiter: arbiter.clone(),
                factory,
                current: RwLock::new(addr),
                restarts: AtomicU64::new(0),
                stopping: AtomicBool::new(false),
                short_lives: std::sync::atomic::AtomicU32::new(0),
                stop,
            }),
        };
        supervised.watch(death);
        supervised
    }

    /// How many times the actor was started again.
    pub fn restarts(&self) -> u64 {
        self.inner.restarts.load(Ordering::Relaxed)
    }

    /// Stop the actor; it is not started again after this.
    pub fn stop(&self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        self.inner.stop.send_replace(true);
    }

    /// Wait for the instance started now to die, then start the next one:
    /// at once after a life of at least [`STABLE_LIFE`], else after a delay
    /// that doubles with each short life (an actor that cannot load its state
    /// is not restarted in a tight loop).
    fn watch(&self, death: tokio::sync::oneshot::Receiver<()>) {
        let weak = Arc::downgrade(&self.inner);
        let born = std::time::Instant::now();
        self.inner.arbiter.spawn(async move {
            let _ = death.await;
            let Some(inner) = weak.upgrade() else { return };
            let delay = if born.elapsed() >= STABLE_LIFE {
                inner.short_lives.store(0, Ordering::Relaxed);
                std::time::Duration::ZERO
            } else {
                let short_lives = inner.short_lives.fetch_add(1, Ordering::Relaxed);
                restart_delay(short_lives)
            };
            drop(inner);
            if !delay.is_zero() {
                actix_rt::time::sleep(delay).await;
            }
            let Some(inner) = weak.upgrade() else { return };
            if inner.stopping.load(Ordering::SeqCst) {
                return;
            }
            let supervised = Supervised { inner };
            supervised.restart();
        });
    }

    fn restart(&self) {
        let (addr, death) = spawn_watched(
            &self.inner.arbiter,
            &self.inner.factory,
            self.inner.stop.subscribe(),
        );
        *self
            .inner
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = addr;
        let restarts = self.inner.restarts.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::warn!(
            service = self.inner.service,
            restarts,
            "service actor died; started again from its stored state"
        );
        self.watch(death);
    }
}

/// Start one instance; the receiver completes when its context is dropped.
/// The receiver completes when the instance's context is dropped; the
/// instance stops itself once `stop` turns true (or its sender is gone).
fn spawn_watched<A: Actor<Context = Context<A>>>(
    arbiter: &actix_rt::ArbiterHandle,
    factory: &Factory<A>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> (Addr<A>, tokio::sync::oneshot::Receiver<()>) {
    let (alive_tx, death) = tokio::sync::oneshot::channel::<()>();
    let factory = factory.clone();
    let addr = A::start_in_arbiter(arbiter, move |ctx: &mut Context<A>| {
        // Dropped with the context: when the actor stops or its task panics.
        let watch = async move {
            let _alive = alive_tx;
            let _ = stop.wait_for(|stopped| *stopped).await;
        };
        ctx.spawn(
            actix::fut::wrap_future(watch).map(|(), _actor, ctx: &mut Context<A>| ctx.stop()),
        );
        factory()
    });
    (addr, death)
}

impl<A: Actor<Context = Context<A>>> ActorAddress<A> for Supervised<A> {
    fn current(&self) -> Addr<A> {
        self.inner
            .current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn service(&self) -> &str {
        self.inner.service
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A counter whose value survives restarts in `store`, as a service's
    /// state survives in sled.
    struct Counter {
        store: Arc<std::sync::Mutex<u64>>,
        value: u64,
    }

    impl Actor for Counter {
        type Context = Context<Self>;
        fn started(&mut self, _ctx: &mut Context<Self>) {
            self.value = *self.store.lock().unwrap_or_else(|e| e.into_inner());
        }
    }

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Add(u64);
    impl BusMessage for Add {
        const NAME: &'static str = "Add";
        type Reply = u64;
    }

    #[derive(actix::Message)]
    #[rtype(result = "()")]
    struct Crash;

    impl Handler<Incoming<Add>> for Counter {
        type Result = Result<u64, GolemError>;
        fn handle(&mut self, incoming: Incoming<Add>, _ctx: &mut Context<Self>) -> Self::Result {
            self.value += incoming.message.0;
            *self.store.lock().unwrap_or_else(|e| e.into_inner()) = self.value;
            Ok(self.value)
        }
    }

    impl Handler<Crash> for Counter {
        type Result = ();
        fn handle(&mut self, _: Crash, _ctx: &mut Context<Self>) {
            panic!("crash requested by the test");
        }
    }

    #[test]
    fn restarts_after_short_lives_back_off_up_to_five_seconds() {
        use std::time::Duration;
        assert_eq!(restart_delay(0), Duration::ZERO);
        assert_eq!(restart_delay(1), Duration::from_millis(100));
        assert_eq!(restart_delay(3), Duration::from_millis(400));
        assert_eq!(restart_delay(10), Duration::from_secs(5));
        assert_eq!(restart_delay(u32::MAX), Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_dead_actor_is_started_again_with_its_stored_state() {
        let arbiter = ServiceArbiter::spawn("test-service").expect("arbiter");
        let store = Arc::new(std::sync::Mutex::new(0));
        let factory_store = store.clone();
        let counter = Supervised::start("counter", arbiter.handle(), move || Counter {
            store: factory_store.clone(),
            value: 0,
        });
        let router = crate::Router::new();
        router
            .bind(
                "/local/counter",
                ServiceEndpoint::new().on_actor::<Add, _, _>(counter.clone()),
            )
            .expect("bind");
        assert_eq!(
            router.call("/local/counter", &Add(2)).await.expect("add"),
            2
        );

        let error = deliver(&counter, Crash)
            .await
            .expect_err("the crash has no reply");
        assert_eq!(error.code, golem_model::ErrorCode::Unavailable);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while counter.restarts() == 0 {
            assert!(std::time::Instant::now() < deadline, "never restarted");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(
            router.call("/local/counter", &Add(3)).await.expect("add"),
            5
        );
        counter.stop();
        arbiter.stop();
    }
}
