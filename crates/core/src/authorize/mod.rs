//! What a verified token may do: scopes per route, method and tool, the
//! sessions it owns, the tools it may see in `tools/list`, and the
//! `requestState` it may resume, and how often it may call (rate limits).
pub mod policy;
pub mod rate_limit;
pub mod request_state;
pub mod sessions;
pub mod tool_filter;
