//! Drives the request machine (crates/core/src/flow/machine.rs) with
//! arbitrary requests and arbitrary answers to every need it names: key
//! sets, KV values, fetch failures, signature verdicts, bodies and origin
//! answers all come from the input. Two requests run against one gate, so
//! what the first leaves in isolate memory meets the second. Asserts:
//! - no input panics;
//! - a request is forwarded only after a good signature verdict in its own
//!   run, or with a token the gate verified (a good verdict) before;
//! - a token whose every verdict was bad is never remembered as verified;
//! - a DPoP proof is forwarded at most once by a gate (RFC 9449 §11.1),
//!   whatever the Durable Object store answers.
//!
//! The route takes both schemes (`DPOP=either`) with nonces on; proofs are
//! built by the harness from input choices (method, URL, time, token hash,
//! nonce, `jti`) and signed, so the fuzzer reaches every check behind the
//! signature.
#![no_main]

use std::rc::Rc;

use base64ct::{Base64UrlUnpadded, Encoding};
use ed25519_dalek::{Signer, SigningKey};
use libfuzzer_sys::fuzz_target;
use portcullis_core::authorize::rate_limit::Counted;
use portcullis_core::config::{Bindings, Config};
use portcullis_core::flow::machine::{Answer, BodyError, Flow, Gate, Need, Request, Step};
use portcullis_core::forward::origin::OriginFault;
use portcullis_core::io::{FetchError, FetchedDocument, Io, IoAnswer, StoreFault};
use portcullis_core::verify::dpop::{token_hash, NonceKey};
use portcullis_core::verify::token_cache::TokenKey;

const NOW: i64 = 1_767_225_600;
const ISSUER: &str = "https://auth.example.com";
const JWKS: &str = "https://auth.example.com/jwks";
const NONCE_SECRET: &str = "fuzzing-nonce-secret-of-32-characters";

struct Vars;

impl Bindings for Vars {
    fn text(&self, name: &str) -> Option<String> {
        let value = match name {
            "MCP_RESOURCE" => "https://mcp.example.com/mcp",
            "MCP_ORIGIN" => "http://origin.internal:8080/mcp",
            "OAUTH_ISSUER" => ISSUER,
            "OAUTH_JWKS_URI" => JWKS,
            "MCP_TOOL_SCOPES" => r#"{"void":["invoices:write"]}"#,
            // JWTs only: an introspection verdict is a good verdict of its own.
            "OAUTH_TOKEN_FORMAT" => "jwt",
            // Every forward carries a signed assertion (RFC 8037 A.1's
            // public example key), so its claims are built from what the
            // input put in the token and the body.
            "ASSERTION_KEY" => {
                r#"{"kty":"OKP","crv":"Ed25519","d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#
            }
            "ORIGIN_ASSERTION_AUDIENCE" => "https://origin.internal",
            // Every kind of rule, each counted (within, over or failed as
            // the input says) where the machine counts it.
            "RATE_LIMITS" => {
                r#"[{"binding":"RL_A","key":"address"},{"binding":"RL_S","key":"subject","on_error":"refuse"},{"binding":"RL_T","key":"client+tool","tools":["void"]},{"binding":"RL_M","key":"method"}]"#
            }
            "DPOP" => "either",
            "DPOP_REPLAY_STORE" => "DO_REPLAY",
            "DPOP_NONCE_SECRET" => NONCE_SECRET,
            _ => return None,
        };
        Some(value.to_owned())
    }
    fn has_kv_namespace(&self, _: &str) -> bool {
        true
    }
    fn has_rate_limiter(&self, name: &str) -> bool {
        name.starts_with("RL_")
    }
    fn has_durable_object(&self, name: &str) -> bool {
        name.starts_with("DO_")
    }
}

/// The client's DPoP key (not the issuer's).
fn proof_key() -> SigningKey {
    SigningKey::from_bytes(&[11u8; 32])
}

fn proof_jwk() -> String {
    let x = Base64UrlUnpadded::encode_string(proof_key().verifying_key().as_bytes());
    format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#)
}

/// The RFC 7638 thumbprint of [`proof_key`]: its JWK's required members in
/// order, hashed.
fn proof_jkt() -> String {
    let jwk: serde_json::Value = serde_json::from_str(&proof_jwk()).unwrap();
    portcullis_core::verify::jwk::load_key(&jwk)
        .unwrap()
        .key
        .thumbprint()
}

fn sign(header: &str, claims: &str, key: &SigningKey) -> String {
    let signing_input = format!(
        "{}.{}",
        Base64UrlUnpadded::encode_string(header.as_bytes()),
        Base64UrlUnpadded::encode_string(claims.as_bytes())
    );
    let signature = key.sign(signing_input.as_bytes());
    format!(
        "{signing_input}.{}",
        Base64UrlUnpadded::encode_string(&signature.to_bytes())
    )
}

/// A DPoP proof for `method` at `path` with `token`, each part right or
/// wrong as the input says.
fn proof(input: &mut Input<'_>, method: &str, path: &str, token: &str) -> String {
    if input.byte() % 8 == 0 {
        return input.text();
    }
    let htm = if input.byte() % 4 == 0 { "GET" } else { method };
    let htu = match input.byte() % 4 {
        0 => "https://mcp.example.com/other".to_owned(),
        1 => format!("https://MCP.example.com:443{path}?q=1"),
        _ => format!("https://mcp.example.com{path}"),
    };
    let iat = NOW + i64::from(input.byte()) * 4 - 400;
    let ath = if input.byte() % 4 == 0 {
        token_hash("another token")
    } else {
        token_hash(token)
    };
    let nonce = match input.byte() % 4 {
        0 => String::new(),
        1 => format!(r#","nonce":"{}""#, input.text().replace(['"', '\\'], "")),
        _ => format!(
            r#","nonce":"{}""#,
            NonceKey::parse(NONCE_SECRET)
                .unwrap()
                .issue(NOW + i64::from(input.byte()) - 128)
        ),
    };
    let jti = input.text().replace(['"', '\\'], "");
    let claims = format!(
        r#"{{"jti":"{jti}","htm":"{htm}","htu":"{htu}","iat":{iat},"ath":"{ath}"{nonce}}}"#
    );
    let typ = if input.byte() % 8 == 0 {
        "JWT"
    } else {
        "dpop+jwt"
    };
    let header = format!(r#"{{"typ":"{typ}","alg":"EdDSA","jwk":{}}}"#, proof_jwk());
    sign(&header, &claims, &proof_key())
}

fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&[9u8; 32])
}

fn jwks() -> String {
    let x = Base64UrlUnpadded::encode_string(signing_key().verifying_key().as_bytes());
    format!(r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","kid":"ed","x":"{x}"}}]}}"#)
}

/// Reads the input a byte or a slice at a time; zeros once it runs out.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((first, rest)) => {
                self.0 = rest;
                *first
            }
            None => 0,
        }
    }
    fn bytes(&mut self) -> &'a [u8] {
        let len = usize::from(self.byte()).min(self.0.len());
        let (taken, rest) = self.0.split_at(len);
        self.0 = rest;
        taken
    }
    fn text(&mut self) -> String {
        String::from_utf8_lossy(self.bytes()).into_owned()
    }
}

fn token(input: &mut Input<'_>) -> String {
    match input.byte() % 3 {
        // Claims from the input, signed with the key the JWKS holds.
        0 | 1 => {
            let claims = if input.byte() % 2 == 0 {
                // Bound to the client's DPoP key, or not.
                let cnf = match input.byte() % 3 {
                    0 => format!(r#","cnf":{{"jkt":"{}"}}"#, proof_jkt()),
                    1 => {
                        r#","cnf":{"jkt":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}"#.to_owned()
                    }
                    _ => String::new(),
                };
                format!(
                    r#"{{"iss":"{ISSUER}","aud":"https://mcp.example.com/mcp","sub":"u","exp":{},"scope":"{}"{cnf}}}"#,
                    NOW + i64::from(input.byte()) - 64,
                    input.text().replace(['"', '\\'], "")
                )
            } else {
                input.text()
            };
            let header = r#"{"alg":"EdDSA","kid":"ed","typ":"at+jwt"}"#;
            sign(header, &claims, &signing_key())
        }
        _ => input.text(),
    }
}

/// A request, and the DPoP proof it carries (if any).
fn request(input: &mut Input<'_>, token: &str, reused: Option<&str>) -> (Request, Option<String>) {
    let method = ["GET", "POST", "DELETE", "OPTIONS", "PUT"][usize::from(input.byte() % 5)];
    let path = [
        "/mcp",
        "/mcp/x",
        "/.well-known/oauth-protected-resource/mcp",
        "/other",
    ][usize::from(input.byte() % 4)];
    let scheme = if input.byte() % 2 == 0 {
        "Bearer"
    } else {
        "DPoP"
    };
    let mut headers = vec![("authorization".to_owned(), format!("{scheme} {token}"))];
    // A new proof, the previous request's again (a replay), or none.
    let proof = match (input.byte() % 4, reused) {
        (0, Some(previous)) => Some(previous.to_owned()),
        (3, _) => None,
        _ => Some(proof(input, method, path, token)),
    };
    if let Some(proof) = &proof {
        headers.push(("dpop".to_owned(), proof.clone()));
    }
    for _ in 0..input.byte() % 4 {
        let name = [
            "mcp-session-id",
            "content-length",
            "origin",
            "mcp-method",
            "mcp-name",
            "authorization",
        ][usize::from(input.byte() % 6)];
        headers.push((name.to_owned(), input.text()));
    }
    let request = Request {
        method: method.to_owned(),
        path: path.to_owned(),
        query: None,
        headers,
        base: Some("https://mcp.example.com".to_owned()),
    };
    (request, proof)
}

fn document(input: &mut Input<'_>) -> Result<FetchedDocument, FetchError> {
    match input.byte() % 6 {
        0 => Err(FetchError::Network),
        1 => Err(FetchError::Timeout),
        2 => Ok(FetchedDocument {
            status: 200,
            body: input.bytes().to_vec(),
            ..FetchedDocument::default()
        }),
        3 => Ok(FetchedDocument {
            status: 302,
            location: Some(input.text()),
            ..FetchedDocument::default()
        }),
        _ => Ok(FetchedDocument {
            status: 200,
            body: jwks().into_bytes(),
            cache_control: Some(input.text()),
            ..FetchedDocument::default()
        }),
    }
}

/// Runs one request; returns whether it was forwarded and whether any
/// verdict it was given was good.
fn run(gate: &Rc<Gate>, request: Request, input: &mut Input<'_>) -> (bool, bool) {
    let mut flow = Flow::new(Rc::clone(gate), request, NOW + i64::from(input.byte()));
    let (mut forwarded, mut good_verdict) = (false, false);
    for _ in 0..200 {
        let mut verifying = false;
        let answer = match flow.step() {
            Step::Done(_) => break,
            Step::Respond(_) => continue,
            Step::Need(need) => match need {
                Need::Io(Io::Get { .. } | Io::PostForm { .. }) => {
                    Answer::Io(IoAnswer::Fetched(document(input)))
                }
                Need::Io(Io::KvGet { .. }) => Answer::Io(match input.byte() % 4 {
                    0 => IoAnswer::Kv(None),
                    1 => IoAnswer::KvFault(StoreFault::ReadTimedOut),
                    _ => IoAnswer::Kv(Some(input.text())),
                }),
                Need::Io(Io::KvPut { .. }) => Answer::Io(match input.byte() % 4 {
                    0 => IoAnswer::KvFault(StoreFault::WriteLimited),
                    _ => IoAnswer::Done,
                }),
                Need::Io(_) => Answer::Io(IoAnswer::Done),
                Need::Verify(_) => {
                    verifying = true;
                    Answer::Verdict(input.byte() % 2 == 0)
                }
                Need::ReadBody { .. } => Answer::Body(match input.byte() % 4 {
                    0 => Err(BodyError::TooLarge),
                    1 => Err(BodyError::Unreadable),
                    _ => Ok(input.bytes().to_vec()),
                }),
                Need::Forward(request) => {
                    forwarded = true;
                    assert!(
                        request.assertion.is_some(),
                        "a forward without its assertion"
                    );
                    Answer::Origin(match input.byte() % 6 {
                        0 => Err(OriginFault::Unreachable),
                        4 => Err(OriginFault::FirstByteTimeout),
                        5 => Err(OriginFault::ConnectTimeout),
                        // The driver could not sign: nothing was sent.
                        1 => {
                            flow.resume(Answer::Unsigned);
                            continue;
                        }
                        _ => Ok((
                            200,
                            vec![
                                ("content-type".to_owned(), input.text()),
                                ("mcp-session-id".to_owned(), input.text()),
                            ],
                        )),
                    })
                }
                Need::ReadOriginBody => Answer::OriginBody(Ok(input.bytes().to_vec())),
                Need::RateLimit(counts) => Answer::Counted(
                    counts
                        .iter()
                        .map(|_| match input.byte() % 3 {
                            0 => Counted::Over,
                            1 => Counted::Failed,
                            _ => Counted::Within,
                        })
                        .collect(),
                ),
                Need::ClaimProof { .. } => Answer::Claimed(match input.byte() % 3 {
                    0 => Ok(false),
                    1 => Err(()),
                    _ => Ok(true),
                }),
            },
        };
        // Now and then, a confused driver: the wrong kind of answer.
        let answer = if input.byte() == 0xFF {
            Answer::Verdict(true)
        } else {
            answer
        };
        // What vouches for the token is the verdict the machine was given.
        good_verdict |= verifying && matches!(answer, Answer::Verdict(true));
        flow.resume(answer);
    }
    (forwarded, good_verdict)
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let config = Config::parse(&Vars).expect("harness configuration parses");
    let binding = config.routes[0].check_binding.clone();
    let gate = Rc::new(Gate::new(Ok(config), [7; 32]));
    let token = token(&mut input);
    let key = TokenKey::of(&token, &binding);
    let mut ever_good = false;
    let mut forwarded_proofs: Vec<String> = Vec::new();
    let mut previous: Option<String> = None;
    for _ in 0..2 {
        let (request, proof) = request(&mut input, &token, previous.as_deref());
        let dpop = request
            .headers
            .iter()
            .any(|(name, value)| name == "authorization" && value.starts_with("DPoP "));
        let (forwarded, good) = run(&gate, request, &mut input);
        if let (true, true, Some(proof)) = (forwarded, dpop, &proof) {
            assert!(
                !forwarded_proofs.contains(proof),
                "a DPoP proof was forwarded twice"
            );
            forwarded_proofs.push(proof.clone());
        }
        previous = proof;
        ever_good |= good;
        assert!(
            !forwarded || ever_good,
            "forwarded without a good verdict, now or before"
        );
        if !ever_good {
            assert!(
                gate.tokens.get(&key, NOW + 300, 600).is_none(),
                "a token no verdict vouched for is remembered as verified"
            );
        }
    }
});
