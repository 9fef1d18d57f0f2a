//! portcullis: an OAuth 2.1 token gate for remote MCP servers.
pub mod bearer;
pub mod jwk;
pub mod jwt;

#[cfg(test)]
mod testkit;
