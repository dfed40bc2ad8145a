//! Which backend watches the root, and the canary that proves native events
//! arrive.
//!
//! Input: the time, the paths of the events the enqueuer reads (to spot its
//! cookies), the count of lost events ([`RescanRequests::losses`]). Output:
//! a [`WatchGuard`] at start ([`start_watching`]: native where the file
//! system sends events, polling where it does not or when native watching
//! fails), and [`Switch`]es later, which the enqueuer applies (its guard
//! replaced, the backend recorded in `sync_meta`, the root rescanned). On a
//! native root a cookie file is written at start and every `interval`; when
//! its event does not arrive within `timeout` the root switches to polling,
//! unless events were lost since it was written (its own event may have
//! been among them: it is written again instead). While a root polls for
//! that reason, a probe, native watches set up beside the polling and a
//! cookie of its own, is armed every `recheck`; when the probe's event
//! arrives its watches take over from polling, and a probe whose event does
//! not arrive in time is dropped. Writes and removes only its cookie files
//! in the root; no SQL.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant};

use super::error::EngineError;
use super::patterns::{COOKIE_PREFIX, Patterns};
use super::watcher::{self, Backend, FsEvent, RescanRequests, WatchGuard};

/// The canary's timing, from the watch settings.
#[derive(Debug, Clone, Copy)]
pub struct CanaryConfig {
    /// How long a cookie's event may take.
    pub timeout: Duration,
    /// Time between two canary checks on a native root.
    pub interval: Duration,
    /// Time between two probes on a root the canary switched to polling.
    pub recheck: Duration,
    /// The polling backend's interval, for a switch to it.
    pub poll_interval: Duration,
}

/// A new backend for the root, with the reason to record.
pub struct Switch {
    /// The watches to use from now on.
    pub guard: WatchGuard,
    /// Why, as `status` shows it.
    pub reason: String,
}

/// A cookie file whose event is awaited.
#[derive(Debug)]
struct Cookie {
    path: PathBuf,
    deadline: Instant,
    /// [`RescanRequests::losses`] when it was written.
    losses: u64,
}

/// Native watches set up beside polling, and the cookie written under them.
struct Probe {
    guard: WatchGuard,
    cookie: Cookie,
}

/// The canary of one root.
pub struct Canary {
    root: PathBuf,
    cfg: CanaryConfig,
    tx: SyncSender<FsEvent>,
    rescans: Arc<RescanRequests>,
    /// The native root's cookie, while its event is awaited.
    cookie: Option<Cookie>,
    next_cookie: Instant,
    /// True while the root polls because its cookie's event went missing
    /// (not because polling was asked for or the file system needs it).
    native_lost: bool,
    probe: Option<Probe>,
    next_probe: Instant,
    /// Probes armed so far: each cookie has a name of its own, so a late
    /// event of an earlier probe is not taken for the current one's.
    probes: u64,
}

/// Starts watching `root`: native events unless `force_poll` or its file
/// system needs polling, and polling when native watching cannot start.
/// Returns the guard and the reason for its backend.
///
/// # Errors
/// [`EngineError::Watch`] when neither backend can watch the root.
pub fn start_watching(
    root: &Path,
    force_poll: bool,
    poll_interval: Duration,
    tx: &SyncSender<FsEvent>,
    rescans: &Arc<RescanRequests>,
    patterns: &Patterns,
) -> Result<(WatchGuard, String), EngineError> {
    let (backend, reason) = watcher::choose_backend(root, force_poll, poll_interval);
    match watcher::start(root, backend, tx.clone(), rescans.clone(), patterns) {
        Ok(guard) => Ok((guard, reason)),
        Err(e) if backend == Backend::Native => {
            tracing::warn!(error = %e, "native watching failed; polling instead");
            let poll = Backend::Poll {
                interval: poll_interval,
            };
            let guard = watcher::start(root, poll, tx.clone(), rescans.clone(), patterns)?;
            Ok((guard, e.to_string()))
        }
        Err(e) => Err(e),
    }
}

impl Canary {
    /// A canary for `root` whose first cookie is due at once.
    pub fn new(
        root: PathBuf,
        cfg: CanaryConfig,
        tx: SyncSender<FsEvent>,
        rescans: Arc<RescanRequests>,
        now: Instant,
    ) -> Canary {
        Canary {
            root,
            cfg,
            tx,
            rescans,
            cookie: None,
            next_cookie: now,
            native_lost: false,
            probe: None,
            next_probe: now,
            probes: 0,
        }
    }

    /// The canary's cookie while its event is awaited.
    pub fn cookie(&self) -> Option<&Path> {
        self.cookie.as_ref().map(|c| c.path.as_path())
    }

    /// The probe's cookie while its event is awaited.
    pub fn probe(&self) -> Option<&Path> {
        self.probe.as_ref().map(|p| p.cookie.path.as_path())
    }

    /// The next moment [`Canary::check`] has something to do on a root
    /// watched by `backend`.
    pub fn next_wakeup(&self, backend: Backend) -> Option<Instant> {
        let candidates = [
            self.cookie.as_ref().map(|c| c.deadline),
            self.probe.as_ref().map(|p| p.cookie.deadline),
            (self.native_lost && self.probe.is_none()).then_some(self.next_probe),
            (backend == Backend::Native && self.cookie.is_none()).then_some(self.next_cookie),
        ];
        candidates.into_iter().flatten().min()
    }

    /// An event for `path` was read: the canary's cookie proves native
    /// events work; the probe's makes its watches replace polling (they
    /// were set before its cookie was written, so every change since is an
    /// event already read).
    pub fn seen(&mut self, path: &Path, now: Instant) -> Option<Switch> {
        if self.cookie.as_ref().is_some_and(|c| c.path == path)
            && let Some(c) = self.cookie.take()
        {
            let _ = std::fs::remove_file(&c.path);
            tracing::debug!("canary event arrived: native events work");
        }
        if self.probe.as_ref().is_some_and(|p| p.cookie.path == path)
            && let Some(probe) = self.probe.take()
        {
            let _ = std::fs::remove_file(&probe.cookie.path);
            self.native_lost = false;
            self.next_cookie = now + self.cfg.interval;
            let reason = "the canary file's event arrived again".to_owned();
            tracing::info!(root = %self.root.display(), "{reason}; switching back to native events");
            return Some(Switch {
                guard: probe.guard,
                reason,
            });
        }
        None
    }

    /// Writes a cookie that is due, and decides on one whose event is late:
    /// a native root whose cookie's event did not arrive (and no event was
    /// lost meanwhile) switches to polling.
    pub fn check(&mut self, now: Instant, backend: Backend, patterns: &Patterns) -> Option<Switch> {
        if backend != Backend::Native {
            self.probe_check(now, patterns);
            return None;
        }
        if let Some(cookie) = &self.cookie {
            if now < cookie.deadline {
                return None;
            }
            let lost_since = self.rescans.losses() != cookie.losses;
            if let Some(cookie) = self.cookie.take() {
                let _ = std::fs::remove_file(&cookie.path);
            }
            if lost_since {
                // Its event may have been lost with the others (and those
                // are being rescanned): that says nothing about whether
                // native events work. Try again at once.
                tracing::debug!("events were lost while the canary was out; re-arming it");
                self.next_cookie = now;
                return None;
            }
            let reason = format!(
                "the canary file's event did not arrive within {} ms",
                self.cfg.timeout.as_millis()
            );
            tracing::warn!(root = %self.root.display(), "{reason}; switching to polling");
            let poll = Backend::Poll {
                interval: self.cfg.poll_interval,
            };
            return match watcher::start(
                &self.root,
                poll,
                self.tx.clone(),
                self.rescans.clone(),
                patterns,
            ) {
                Ok(guard) => {
                    self.native_lost = true;
                    self.next_probe = now + self.cfg.recheck;
                    Some(Switch { guard, reason })
                }
                Err(e) => {
                    tracing::error!(error = %e, "polling could not start either");
                    None
                }
            };
        }
        if now >= self.next_cookie {
            self.next_cookie = now + self.cfg.interval;
            let path = self
                .root
                .join(format!("{COOKIE_PREFIX}canary-{}", std::process::id()));
            match std::fs::write(&path, b"obby-sync checks that file events arrive\n") {
                Ok(()) => {
                    self.cookie = Some(Cookie {
                        path,
                        deadline: now + self.cfg.timeout,
                        losses: self.rescans.losses(),
                    });
                }
                Err(e) => tracing::warn!(error = %e, "cannot write the canary file"),
            }
        }
        None
    }

    /// On a root the canary switched to polling: arms a probe every
    /// `recheck`, and drops one whose event did not arrive within the
    /// timeout (polling goes on; its watches' events, read meanwhile, were
    /// debounced like the poller's findings).
    fn probe_check(&mut self, now: Instant, patterns: &Patterns) {
        if !self.native_lost {
            return;
        }
        if let Some(probe) = &self.probe {
            if now < probe.cookie.deadline {
                return;
            }
            if let Some(probe) = self.probe.take() {
                let _ = std::fs::remove_file(&probe.cookie.path);
            }
            tracing::debug!("the probe's event did not arrive either; polling on");
            self.next_probe = now + self.cfg.recheck;
            return;
        }
        if now < self.next_probe {
            return;
        }
        self.next_probe = now + self.cfg.recheck;
        let guard = match watcher::start(
            &self.root,
            Backend::Native,
            self.tx.clone(),
            self.rescans.clone(),
            patterns,
        ) {
            Ok(guard) => guard,
            Err(e) => {
                tracing::debug!(error = %e, "native watches cannot be set up; polling on");
                return;
            }
        };
        self.probes += 1;
        let path = self.root.join(format!(
            "{COOKIE_PREFIX}probe-{}-{}",
            std::process::id(),
            self.probes
        ));
        match std::fs::write(&path, b"obby-sync checks that file events arrive again\n") {
            Ok(()) => {
                self.probe = Some(Probe {
                    guard,
                    cookie: Cookie {
                        path,
                        deadline: now + self.cfg.timeout,
                        losses: self.rescans.losses(),
                    },
                });
            }
            Err(e) => tracing::warn!(error = %e, "cannot write the probe's cookie"),
        }
    }

    /// Removes the cookies still out (the engine stops).
    pub fn stop(&mut self) {
        if let Some(cookie) = self.cookie.take() {
            let _ = std::fs::remove_file(cookie.path);
        }
        if let Some(probe) = self.probe.take() {
            let _ = std::fs::remove_file(probe.cookie.path);
        }
    }
}
