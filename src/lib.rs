//! portcullis: an OAuth 2.1 token gate for remote MCP servers.
pub mod bearer;
pub mod config;
pub mod forward;
pub mod gate;
pub mod introspect;
pub mod introspect_cache;
pub mod jsonrpc;
pub mod jwk;
pub mod jwt;
pub mod keys;
pub mod pass;
pub mod policy;
pub mod reply;
pub mod sessions;
pub mod signature;
pub mod token_cache;
pub mod tool_filter;

#[cfg(test)]
mod testkit;

#[cfg(target_arch = "wasm32")]
mod edge;

#[cfg(test)]
mod wycheproof_tests;

#[cfg(test)]
mod signature_cases;
