//! The native driver of the request machine: performs every [`Need`] from a
//! script (a key-value map for Workers KV, canned documents per URL, the
//! request body, the origin's answer) and checks signatures with the native
//! RustCrypto backend. The tests and the fuzz target run the very machine
//! the edge runs through it, so it is the reference for every decision.
//! Native only: the edge is driven by the JavaScript entry.

use std::collections::HashMap;
use std::rc::Rc;

use base64ct::{Base64UrlUnpadded, Encoding};

use crate::authorize::rate_limit::Counted;
use crate::flow::gate::Decision;
use crate::flow::machine::{Answer, Body, BodyError, Flow, Gate, Need, Request, Response, Step};
use crate::forward::assertion::ASSERTION_HEADER;
use crate::forward::origin::{OriginFault, OriginRequest};
use crate::io::{FetchError, FetchedDocument, Io, IoAnswer, StoreFault};
use crate::verify::signature::verify_signature;

/// How signature checks are answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdicts {
    /// By the native backend.
    Native,
    /// Always this.
    Fixed(bool),
}

/// What the outside world answers, and what the machine did with it.
#[derive(Debug)]
pub struct Script {
    /// Workers KV.
    pub kv: HashMap<String, String>,
    /// Documents by URL; a URL not here answers 404.
    pub documents: HashMap<String, Result<FetchedDocument, FetchError>>,
    /// Signature verdicts.
    pub verdicts: Verdicts,
    /// The request body.
    pub body: Result<Vec<u8>, BodyError>,
    /// The origin's status and header fields, or why it gave none.
    pub origin: Result<(u16, Vec<(String, String)>), OriginFault>,
    /// The origin's body.
    pub origin_body: Vec<u8>,
    /// Private JWKs by binding name, for the assertion's signatures; a
    /// binding not here, or a key that does not sign, fails the signing.
    pub signing_keys: HashMap<String, String>,
    /// Rate Limiting bindings: each one's limit per key (within one
    /// script's life, as one period); a binding not here fails its counts.
    pub limits: HashMap<String, u32>,
    /// How often each binding and key was counted.
    pub counted: HashMap<(String, String), u32>,
    /// The Durable Object replay stores: the keys claimed in each binding
    /// (a binding not here fails its claims).
    pub claimed: HashMap<String, std::collections::HashSet<String>>,
    /// Workers KV faults: a read or write (as the fault's kind says) of a
    /// key starting with the prefix fails so.
    pub kv_faults: Vec<(String, StoreFault)>,
    /// Every need the machine named, in order.
    pub needs: Vec<Need>,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            kv: HashMap::new(),
            documents: HashMap::new(),
            verdicts: Verdicts::Native,
            body: Ok(Vec::new()),
            origin: Ok((
                200,
                vec![("content-type".into(), "application/json".into())],
            )),
            origin_body: b"{}".to_vec(),
            signing_keys: HashMap::new(),
            limits: HashMap::new(),
            counted: HashMap::new(),
            claimed: HashMap::new(),
            kv_faults: Vec::new(),
            needs: Vec::new(),
        }
    }
}

/// One request, run to its end.
#[derive(Debug)]
pub struct Run {
    /// The answer the client got.
    pub response: Response,
    /// The decision record (route, token, audit, reason, outcome).
    pub decision: Decision,
    /// What was sent to the origin, with the body, if anything.
    pub forwarded: Option<(OriginRequest, Option<Vec<u8>>)>,
    /// The client's body bytes, filtered stream included.
    pub body: Vec<u8>,
    /// A background log line, if background work ran.
    pub background: Option<String>,
}

/// Most steps one request may take before the driver calls it a loop.
const MAX_STEPS: usize = 1_000;

impl Script {
    /// Serves `body` at `url` with status 200.
    pub fn serve(&mut self, url: &str, body: &str) {
        self.documents.insert(
            url.to_owned(),
            Ok(FetchedDocument {
                status: 200,
                body: body.as_bytes().to_vec(),
                ..FetchedDocument::default()
            }),
        );
    }

    /// How many times the machine fetched `url`.
    pub fn fetches(&self, url: &str) -> usize {
        self.needs
            .iter()
            .filter(|need| match need {
                Need::Io(Io::Get { url: asked, .. })
                | Need::Io(Io::PostForm { url: asked, .. }) => asked.as_str() == url,
                _ => false,
            })
            .count()
    }

    /// How many signature checks the machine asked for.
    pub fn checks(&self) -> usize {
        self.needs
            .iter()
            .filter(|need| matches!(need, Need::Verify(_)))
            .count()
    }

    /// Runs `request` through a new machine of `gate` at `now`.
    pub fn run(&mut self, gate: &Rc<Gate>, request: Request, now: i64) -> Run {
        let mut flow = Flow::new(Rc::clone(gate), request, now);
        let mut response = None;
        let mut forwarded = None;
        let mut body = Vec::new();
        for _ in 0..MAX_STEPS {
            let need = match flow.step() {
                Step::Need(need) => need,
                Step::Respond(answer) => {
                    assert!(response.is_none(), "the machine answered twice");
                    body = match &answer.body {
                        Body::Bytes(bytes) => bytes.clone(),
                        Body::Origin => self.origin_body.clone(),
                        Body::OriginFiltered => {
                            let mut out = flow.filter_chunk(&self.origin_body);
                            out.extend(flow.filter_end());
                            out
                        }
                    };
                    response = Some(answer);
                    continue;
                }
                Step::Done(background) => {
                    let response = response.expect("the machine finished without an answer");
                    return Run {
                        decision: flow.decision().clone(),
                        response,
                        forwarded,
                        body,
                        background,
                    };
                }
            };
            self.needs.push(need.clone());
            let answer = match need {
                Need::Io(io) => Answer::Io(self.perform(io)),
                Need::Verify(check) => Answer::Verdict(match self.verdicts {
                    Verdicts::Native => {
                        verify_signature(check.alg, &check.key, &check.message, &check.signature)
                    }
                    Verdicts::Fixed(verdict) => verdict,
                }),
                Need::ReadBody { max_bytes, .. } => Answer::Body(match &self.body {
                    Ok(body) if body.len() > max_bytes => Err(BodyError::TooLarge),
                    other => other.clone(),
                }),
                Need::Forward(mut request) => {
                    assert!(forwarded.is_none(), "the machine forwarded twice");
                    // Signed as the edge's WebCrypto signs, or not sent.
                    if let Some(signing) = &request.assertion {
                        let signature = self
                            .signing_keys
                            .get(signing.binding)
                            .and_then(|jwk| sign(jwk, &signing.input));
                        let Some(signature) = signature else {
                            flow.resume(Answer::Unsigned);
                            continue;
                        };
                        let value = format!(
                            "{}.{}",
                            signing.input,
                            Base64UrlUnpadded::encode_string(&signature)
                        );
                        request.headers.push((ASSERTION_HEADER.to_owned(), value));
                    }
                    // The gate's rewrite of the body, else the body as read.
                    let body = request.body.clone().or(flow.body().map(<[u8]>::to_vec));
                    forwarded = Some((request, body));
                    Answer::Origin(self.origin.clone())
                }
                Need::ReadOriginBody => Answer::OriginBody(Ok(self.origin_body.clone())),
                Need::RateLimit(counts) => Answer::Counted(
                    counts
                        .into_iter()
                        .map(|count| {
                            let Some(&limit) = self.limits.get(&count.binding) else {
                                return Counted::Failed;
                            };
                            let seen = self.counted.entry((count.binding, count.key)).or_default();
                            *seen += 1;
                            if *seen <= limit {
                                Counted::Within
                            } else {
                                Counted::Over
                            }
                        })
                        .collect(),
                ),
                Need::ClaimProof { binding, key, .. } => {
                    Answer::Claimed(match self.claimed.get_mut(&binding) {
                        Some(seen) => Ok(seen.insert(key)),
                        None => Err(()),
                    })
                }
            };
            flow.resume(answer);
        }
        panic!("the machine took more than {MAX_STEPS} steps");
    }

    fn kv_fault(&self, key: &str, write: bool) -> Option<StoreFault> {
        let is_write =
            |fault: StoreFault| !matches!(fault, StoreFault::ReadFailed | StoreFault::ReadTimedOut);
        self.kv_faults
            .iter()
            .find(|(prefix, fault)| key.starts_with(prefix.as_str()) && is_write(*fault) == write)
            .map(|(_, fault)| *fault)
    }

    fn perform(&mut self, io: Io) -> IoAnswer {
        match io {
            Io::Get { url, .. } | Io::PostForm { url, .. } => {
                IoAnswer::Fetched(self.documents.get(url.as_str()).cloned().unwrap_or(Ok(
                    FetchedDocument {
                        status: 404,
                        ..FetchedDocument::default()
                    },
                )))
            }
            Io::KvGet { key } => match self.kv_fault(&key, false) {
                Some(fault) => IoAnswer::KvFault(fault),
                None => IoAnswer::Kv(self.kv.get(&key).cloned()),
            },
            Io::KvPut { key, value, .. } => match self.kv_fault(&key, true) {
                Some(fault) => IoAnswer::KvFault(fault),
                None => {
                    self.kv.insert(key, value);
                    IoAnswer::Done
                }
            },
            Io::Sleep { .. } => IoAnswer::Done,
        }
    }
}

/// Signs `input` with the private JWK `jwk` (ES256 or EdDSA), as the edge's
/// WebCrypto does: the reference for the assertions the tests check.
fn sign(jwk: &str, input: &str) -> Option<Vec<u8>> {
    let jwk: serde_json::Value = serde_json::from_str(jwk).ok()?;
    let d = Base64UrlUnpadded::decode_vec(jwk["d"].as_str()?).ok()?;
    match jwk["kty"].as_str()? {
        "EC" => {
            use p256::ecdsa::signature::Signer;
            let key = p256::ecdsa::SigningKey::from_slice(&d).ok()?;
            let signature: p256::ecdsa::Signature = key.sign(input.as_bytes());
            Some(signature.to_bytes().to_vec())
        }
        "OKP" => {
            use ed25519_dalek::Signer;
            let key = ed25519_dalek::SigningKey::from_bytes(&d.try_into().ok()?);
            Some(key.sign(input.as_bytes()).to_bytes().to_vec())
        }
        _ => None,
    }
}
