//! portcullis: an OAuth 2.1 token gate for remote MCP servers.
pub mod bearer;
pub mod config;
pub mod forward;
pub mod gate;
pub mod jwk;
pub mod jwt;
pub mod keys;
pub mod reply;

#[cfg(test)]
mod testkit;

#[cfg(target_arch = "wasm32")]
mod edge;
