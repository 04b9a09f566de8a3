//! Password checks off the event loop: argon2 runs on a worker thread
//! while the request waits deferred (see `Context::defer`), under a
//! server-wide budget, so guesses from any number of addresses can cost
//! the server at most one core's worth of a bounded rate of checks and
//! never stall other clients.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};

use crate::handler::ConnectionId;
use crate::server::Notifier;

/// Checks waiting or running at once, server-wide, unless configured
/// otherwise: beyond them a login is answered `503` at once.
pub const DEFAULT_MAX_PENDING: usize = 16;

/// Checks started per second, server-wide (with a burst of as many),
/// unless configured otherwise. One argon2 check takes 50-80 ms of a
/// core, so the default keeps a flood of guesses under half a core.
pub const DEFAULT_CHECKS_PER_SECOND: u32 = 8;

/// Checks one address may have waiting or running at once.
pub const MAX_PENDING_PER_ADDRESS: u32 = 2;

/// A verdict not collected by its request within this long is dropped
/// (the request's connection went away, or timed out).
const VERDICT_LIFETIME: Duration = Duration::from_secs(30);

/// One password to check.
struct Check {
    conn: ConnectionId,
    peer: Option<IpAddr>,
    user: String,
    password: String,
    /// The user's PHC hash; `None` for an unknown user, who is checked
    /// against a dummy hash so the answer takes as long as for a real one.
    hash: Option<String>,
    /// Names the credentials (see `Security::cache_digest`), so the
    /// verdict is only used for the same ones.
    digest: [u8; 20],
}

/// The outcome of one check, kept for its request's second offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The user name that was checked.
    pub user: String,
    /// The digest of the credentials checked.
    pub digest: [u8; 20],
    /// Whether the password was right (never for an unknown user).
    pub valid: bool,
}

/// Why a check could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// The server-wide budget (pending checks or rate) is spent.
    Server,
    /// This address has as many checks pending as it may.
    Address,
}

/// A finished check on its way back to the loop.
struct Finished {
    conn: ConnectionId,
    peer: Option<IpAddr>,
    verdict: Verdict,
}

/// The worker thread, its budget, and the verdicts waiting for their
/// requests.
pub struct PasswordChecks {
    max_pending: usize,
    checks_per_second: u32,
    sender: Option<SyncSender<Check>>,
    finished: Arc<Mutex<Vec<Finished>>>,
    worker: Option<JoinHandle<()>>,
    pending: usize,
    pending_by_address: HashMap<IpAddr, u32>,
    /// Tokens for starting checks, refilled at `checks_per_second`.
    tokens: f64,
    refilled_at: Option<Instant>,
    verdicts: HashMap<ConnectionId, (Verdict, Instant)>,
}

impl PasswordChecks {
    /// A budget of `max_pending` checks at once and `checks_per_second`;
    /// nothing runs until [`PasswordChecks::start`].
    pub fn new(max_pending: usize, checks_per_second: u32) -> PasswordChecks {
        PasswordChecks {
            max_pending: max_pending.max(1),
            checks_per_second: checks_per_second.max(1),
            sender: None,
            finished: Arc::default(),
            worker: None,
            pending: 0,
            pending_by_address: HashMap::new(),
            tokens: f64::from(checks_per_second.max(1)),
            refilled_at: None,
            verdicts: HashMap::new(),
        }
    }

    /// Starts the worker thread; it notifies the loop after each check.
    pub fn start(&mut self, notifier: Notifier) {
        let (sender, receiver) = mpsc::sync_channel(self.max_pending);
        let finished = self.finished.clone();
        let spawned = std::thread::Builder::new()
            .name("wsloop-passwords".to_owned())
            .spawn(move || run_checks(receiver, finished, notifier));
        match spawned {
            Ok(worker) => {
                self.sender = Some(sender);
                self.worker = Some(worker);
            }
            Err(error) => log::error!("cannot start the password-check thread: {error}"),
        }
    }

    /// Queues a check of `password` for the request on `conn`, whose
    /// verdict [`PasswordChecks::collect`] brings back. `hash` is the
    /// user's, `None` for an unknown user.
    #[allow(clippy::too_many_arguments)]
    pub fn submit(
        &mut self,
        conn: ConnectionId,
        peer: Option<IpAddr>,
        user: &str,
        password: &str,
        hash: Option<String>,
        digest: [u8; 20],
        now: Instant,
    ) -> Result<(), Busy> {
        if peer.is_some_and(|ip| {
            self.pending_by_address.get(&ip).copied().unwrap_or(0) >= MAX_PENDING_PER_ADDRESS
        }) {
            return Err(Busy::Address);
        }
        self.refill(now);
        if self.pending >= self.max_pending || self.tokens < 1.0 {
            return Err(Busy::Server);
        }
        let sender = self.sender.as_ref().ok_or(Busy::Server)?;
        let check = Check {
            conn,
            peer,
            user: user.to_owned(),
            password: password.to_owned(),
            hash,
            digest,
        };
        match sender.try_send(check) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => return Err(Busy::Server),
        }
        self.tokens -= 1.0;
        self.pending += 1;
        if let Some(ip) = peer {
            *self.pending_by_address.entry(ip).or_default() += 1;
        }
        Ok(())
    }

    fn refill(&mut self, now: Instant) {
        let rate = f64::from(self.checks_per_second);
        if let Some(last) = self.refilled_at {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * rate).min(rate);
        }
        self.refilled_at = Some(now);
    }

    /// Takes the checks the worker finished: their verdicts wait for their
    /// requests ([`PasswordChecks::take_verdict`]); returns the
    /// connections to resume, with their peers and verdicts (for failure
    /// accounting).
    pub fn collect(&mut self, now: Instant) -> Vec<(ConnectionId, Option<IpAddr>, Verdict)> {
        let finished = match self.finished.lock() {
            Ok(mut finished) => std::mem::take(&mut *finished),
            Err(_) => Vec::new(),
        };
        self.verdicts
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < VERDICT_LIFETIME);
        let mut resumed = Vec::with_capacity(finished.len());
        for Finished {
            conn,
            peer,
            verdict,
        } in finished
        {
            self.pending = self.pending.saturating_sub(1);
            if let Some(ip) = peer
                && let Some(count) = self.pending_by_address.get_mut(&ip)
            {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    self.pending_by_address.remove(&ip);
                }
            }
            self.verdicts.insert(conn, (verdict.clone(), now));
            resumed.push((conn, peer, verdict));
        }
        resumed
    }

    /// The verdict for the request on `conn`, if its check finished.
    pub fn take_verdict(&mut self, conn: ConnectionId) -> Option<Verdict> {
        self.verdicts.remove(&conn).map(|(verdict, _)| verdict)
    }
}

impl Drop for PasswordChecks {
    fn drop(&mut self) {
        self.sender = None;
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// The worker: checks passwords until the loop side goes away.
fn run_checks(receiver: Receiver<Check>, finished: Arc<Mutex<Vec<Finished>>>, notifier: Notifier) {
    // Made once with the same parameters as real hashes, so a check against
    // it costs what a real one does.
    let dummy = Argon2::default()
        .hash_password(b"wsloop: no such user")
        .map(|hash| hash.to_string())
        .ok();
    for check in receiver {
        let known = check.hash.is_some();
        let hash = check.hash.as_deref().or(dummy.as_deref()).unwrap_or("");
        let matches = PasswordHash::new(hash).is_ok_and(|parsed| {
            Argon2::default()
                .verify_password(check.password.as_bytes(), &parsed)
                .is_ok()
        });
        let verdict = Verdict {
            user: check.user,
            digest: check.digest,
            valid: known && matches,
        };
        if let Ok(mut finished) = finished.lock() {
            finished.push(Finished {
                conn: check.conn,
                peer: check.peer,
                verdict,
            });
        }
        let _ = notifier.notify();
    }
}
