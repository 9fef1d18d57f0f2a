//! Test support: the scripted driver of the key set machines
//! ([`KeySetLookup`], [`KeySetRefresh`]), shared by their machine-level tests
//! (`key_lookup_tests.rs`) and the key cache's policy tests
//! (`keys_tests.rs`). The driver answers each [`Io`] from a fake HTTP map
//! and a fake KV map and records every one it performs; a test that needs an
//! interleaving of several requests steps their machines itself, with
//! [`need`], [`ready`] and [`Driver::perform`], so the order is on the page.
//! Compiled only under `cfg(test)`.

use std::collections::HashMap;
use std::rc::Rc;

use url::Url;

use crate::io::{FetchError, FetchedDocument, Io, IoAnswer, Poll};
use crate::verify::keys::{
    CacheSettings, KeyDemand, KeyMemory, KeySetLookup, KeySetOutcome, KeySetRefresh, TrustedIssuer,
    JOIN_POLL_MS,
};

/// The issuer of the tests.
pub(crate) const ISSUER: &str = "https://auth.example.com";
/// Its configured JWKS URL.
pub(crate) const JWKS: &str = "https://auth.example.com/jwks";

/// [`ISSUER`], with its `jwks_uri` configured or (`None`) to discover.
pub(crate) fn issuer(jwks_uri: Option<&str>) -> TrustedIssuer {
    TrustedIssuer {
        issuer: ISSUER.to_owned(),
        jwks_uri: jwks_uri.map(|uri| Url::parse(uri).unwrap()),
    }
}

/// A machine the driver runs: step, perform the [`Io`], resume, until ready.
pub(crate) trait Machine {
    /// What the machine finishes with.
    type Output;
    /// The next [`Io`], or the outcome.
    fn step(&mut self) -> Poll<Self::Output>;
    /// The answer to the [`Io`] the last `step` asked for.
    fn resume(&mut self, answer: IoAnswer);
}

impl Machine for KeySetRefresh {
    type Output = KeySetOutcome;
    fn step(&mut self) -> Poll<KeySetOutcome> {
        KeySetRefresh::step(self)
    }
    fn resume(&mut self, answer: IoAnswer) {
        KeySetRefresh::resume(self, answer);
    }
}

impl Machine for KeySetLookup {
    type Output = KeySetOutcome;
    fn step(&mut self) -> Poll<KeySetOutcome> {
        KeySetLookup::step(self)
    }
    fn resume(&mut self, answer: IoAnswer) {
        KeySetLookup::resume(self, answer);
    }
}

/// Most steps one machine may take before the driver calls it a loop.
const MAX_STEPS: usize = 1_000;

/// A scripted driver: answers each [`Io`] from a fake HTTP map (an unlisted
/// URL is a 404) and a fake KV map, and records every one it performs.
#[derive(Default)]
pub(crate) struct Driver {
    /// Answers to GETs, by URL.
    pub(crate) http: HashMap<String, Result<FetchedDocument, FetchError>>,
    /// The shared store, read and written.
    pub(crate) kv: HashMap<String, String>,
    /// Every [`Io`] performed, in order.
    pub(crate) log: Vec<Io>,
}

impl Driver {
    /// Serves `body` at `url` with `status`.
    pub(crate) fn serve(&mut self, url: &str, status: u16, body: &str) {
        self.respond(
            url,
            FetchedDocument {
                status,
                body: body.as_bytes().to_vec(),
                ..Default::default()
            },
        );
    }

    /// Answers GETs of `url` with `document`.
    pub(crate) fn respond(&mut self, url: &str, document: FetchedDocument) {
        self.http.insert(url.to_owned(), Ok(document));
    }

    /// Fails GETs of `url` with `error`.
    pub(crate) fn fail(&mut self, url: &str, error: FetchError) {
        self.http.insert(url.to_owned(), Err(error));
    }

    /// Performs `io` and records it.
    pub(crate) fn perform(&mut self, io: &Io) -> IoAnswer {
        self.log.push(io.clone());
        match io {
            Io::Get { url, .. } => {
                IoAnswer::Fetched(self.http.get(url.as_str()).cloned().unwrap_or(Ok(
                    FetchedDocument {
                        status: 404,
                        ..Default::default()
                    },
                )))
            }
            Io::PostForm { .. } => IoAnswer::Fetched(Err(FetchError::Network)),
            Io::KvGet { key } => IoAnswer::Kv(self.kv.get(key).cloned()),
            Io::KvPut { key, value, .. } => {
                self.kv.insert(key.clone(), value.clone());
                IoAnswer::Done
            }
            Io::Sleep { .. } => IoAnswer::Done,
        }
    }

    /// Runs `machine` to its outcome.
    pub(crate) fn run<M: Machine>(&mut self, machine: &mut M) -> M::Output {
        for _ in 0..MAX_STEPS {
            match machine.step() {
                Poll::Ready(outcome) => return outcome,
                Poll::Need(io) => {
                    let answer = self.perform(&io);
                    machine.resume(answer);
                }
            }
        }
        panic!("the machine took more than {MAX_STEPS} steps");
    }

    /// How many times `url` was fetched.
    pub(crate) fn gets(&self, url: &str) -> usize {
        self.log
            .iter()
            .filter(|io| matches!(io, Io::Get { url: got, .. } if got.as_str() == url))
            .count()
    }

    /// How many writes were handed to the shared store.
    pub(crate) fn puts(&self) -> usize {
        self.log
            .iter()
            .filter(|io| matches!(io, Io::KvPut { .. }))
            .count()
    }
}

/// A lookup of `trusted`'s set over `memory`, with the default settings.
pub(crate) fn lookup_of(
    memory: &Rc<KeyMemory>,
    trusted: &TrustedIssuer,
    demand: KeyDemand,
    now: i64,
    fetched_here: bool,
) -> KeySetLookup {
    KeySetLookup::new(
        Rc::clone(memory),
        CacheSettings::default(),
        trusted.clone(),
        demand,
        now,
        fetched_here,
    )
}

/// A lookup of [`ISSUER`]'s set at [`JWKS`].
pub(crate) fn lookup_at(
    memory: &Rc<KeyMemory>,
    demand: KeyDemand,
    now: i64,
    fetched_here: bool,
) -> KeySetLookup {
    lookup_of(memory, &issuer(Some(JWKS)), demand, now, fetched_here)
}

/// A request's first lookup: the current set.
pub(crate) fn current(memory: &Rc<KeyMemory>, now: i64) -> KeySetLookup {
    lookup_at(memory, KeyDemand::Current, now, false)
}

/// A lookup for a token whose key is not in the set; `fetched_here` is the
/// same request's previous lookup's [`KeySetLookup::fetched`].
pub(crate) fn unknown_kid(memory: &Rc<KeyMemory>, now: i64, fetched_here: bool) -> KeySetLookup {
    lookup_at(memory, KeyDemand::UnknownKid, now, fetched_here)
}

/// A refresh of `trusted`'s set over `memory`, with the default settings.
pub(crate) fn refresh_of(
    memory: &Rc<KeyMemory>,
    trusted: &TrustedIssuer,
    now: i64,
) -> KeySetRefresh {
    KeySetRefresh::new(
        Rc::clone(memory),
        CacheSettings::default(),
        trusted.clone(),
        now,
    )
}

/// The I/O `machine` asks for next; it must not be finished.
pub(crate) fn need<M: Machine>(machine: &mut M) -> Io {
    match machine.step() {
        Poll::Need(io) => io,
        Poll::Ready(_) => panic!("finished, expected to need I/O"),
    }
}

/// The outcome of `machine`, which must be finished.
pub(crate) fn ready<M: Machine>(machine: &mut M) -> M::Output {
    match machine.step() {
        Poll::Ready(outcome) => outcome,
        Poll::Need(io) => panic!("expected an outcome, needs {io:?}"),
    }
}

/// The read of [`ISSUER`]'s set from the shared store.
pub(crate) fn read_set() -> Io {
    Io::KvGet {
        key: format!("jwks:v1:{ISSUER}"),
    }
}

/// The read of [`ISSUER`]'s last unknown-kid refetch attempt.
pub(crate) fn read_attempt() -> Io {
    Io::KvGet {
        key: format!("jwks-refetch:v1:{ISSUER}"),
    }
}

/// A waiting request's pause.
pub(crate) fn sleep() -> Io {
    Io::Sleep { ms: JOIN_POLL_MS }
}

/// Whether a request of the isolate is fetching [`ISSUER`]'s set.
pub(crate) fn fetching(memory: &KeyMemory) -> bool {
    memory.with(ISSUER, |state| state.fetching)
}
