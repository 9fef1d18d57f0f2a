//! portcullis-core: the gate's logic, with no I/O and no dependency on the
//! Workers runtime (the worker crate, the repository's root package, is the
//! only place that talks to `worker` and `wasm-bindgen`; the compiler holds
//! that boundary).
//!
//! The folders follow a request: [`parse`] what arrived, [`verify`] the
//! token, [`authorize`] what it asks for, [`forward`] it (or answer it);
//! [`flow`] runs those steps for one request; [`config`] is parsed once from
//! the bindings and read by all of them.
pub mod authorize;
pub mod config;
pub mod flow;
pub mod forward;
pub mod io;
pub mod parse;
pub mod verify;

#[cfg(test)]
mod testkit;
