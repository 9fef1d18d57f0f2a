//! What a verified token may do: scopes per route, method and tool, the
//! sessions it owns, and the tools it may see in `tools/list`.
pub mod policy;
pub mod sessions;
pub mod tool_filter;
