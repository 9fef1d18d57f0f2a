//! Which MCP revision a request speaks (MCP Streamable HTTP §Protocol Version
//! Header, 2025-06-18 onwards; MCP 2026-07-28 basic §Per-request protocol
//! fields), for operators who refuse revisions older than a minimum
//! (`MCP_MIN_PROTOCOL_VERSION`): a policy that relies on the 2026-07-28
//! request metadata headers means nothing while a client can still speak a
//! revision that does not send them.

use crate::parse::jsonrpc::RpcMessage;

/// The MCP revisions, oldest first. A minimum must name one of them, so a
/// typo cannot lock every client out (or let every client in).
pub const KNOWN_REVISIONS: [&str; 5] = [
    "2024-11-05",
    "2025-03-26",
    "2025-06-18",
    "2025-11-25",
    "2026-07-28",
];

/// The revision a server assumes when a request names none (Streamable HTTP
/// §Protocol Version Header: "the server SHOULD assume protocol version
/// 2025-03-26").
pub const ASSUMED_WITHOUT_HEADER: &str = "2025-03-26";

/// The revision a request speaks: its `MCP-Protocol-Version` header; else the
/// `_meta` protocol version of a single message (2026-07-28); else the
/// version an `initialize` offers (the header is not sent before the version
/// is negotiated); else [`ASSUMED_WITHOUT_HEADER`].
pub fn request_revision<'a>(header: Option<&'a str>, messages: &'a [RpcMessage]) -> &'a str {
    if let Some(header) = header {
        return header.trim();
    }
    if let [message] = messages {
        if let Some(version) = message.protocol_version.as_deref() {
            return version;
        }
    }
    messages
        .iter()
        .find_map(|message| message.offered_version.as_deref())
        .unwrap_or(ASSUMED_WITHOUT_HEADER)
}

/// A request speaks a revision older than the minimum: refused with MCP
/// 2026-07-28's `UnsupportedProtocolVersionError` (-32022), which names the
/// revisions the gate lets through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported {
    /// The revision the request speaks, as it named it.
    pub requested: String,
    /// The known revisions at or after the minimum.
    pub supported: Vec<&'static str>,
}

/// Checks `revision` against `minimum` (one of [`KNOWN_REVISIONS`]). A
/// revision is a date (`YYYY-MM-DD`), so order is text order; anything not
/// shaped like one is unsupported.
pub fn check_minimum(minimum: &str, revision: &str) -> Result<(), Unsupported> {
    let dated = revision.len() == 10
        && revision.bytes().enumerate().all(|(i, byte)| match i {
            4 | 7 => byte == b'-',
            _ => byte.is_ascii_digit(),
        });
    if dated && revision >= minimum {
        return Ok(());
    }
    Err(Unsupported {
        requested: revision.to_owned(),
        supported: KNOWN_REVISIONS
            .into_iter()
            .filter(|known| *known >= minimum)
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::jsonrpc::parse_body;

    fn revision_of(header: Option<&str>, body: &str) -> String {
        let messages = parse_body(body.as_bytes()).unwrap();
        request_revision(header, &messages).to_owned()
    }

    #[test]
    fn the_header_then_the_body_then_the_assumed_revision_name_a_request() {
        let discover = r#"{"jsonrpc":"2.0","id":1,"method":"server/discover","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;
        assert_eq!(revision_of(Some(" 2026-07-28 "), discover), "2026-07-28");
        assert_eq!(revision_of(None, discover), "2026-07-28");
        let initialize = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"c","version":"1"}}}"#;
        assert_eq!(revision_of(None, initialize), "2025-06-18");
        let list = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
        assert_eq!(revision_of(None, list), ASSUMED_WITHOUT_HEADER);
        assert_eq!(revision_of(Some("2025-11-25"), list), "2025-11-25");
    }

    #[test]
    fn revisions_before_the_minimum_or_not_dates_are_unsupported() {
        assert_eq!(check_minimum("2025-06-18", "2025-06-18"), Ok(()));
        assert_eq!(check_minimum("2025-06-18", "2026-07-28"), Ok(()));
        let refused = check_minimum("2025-11-25", "2025-06-18").unwrap_err();
        assert_eq!(refused.requested, "2025-06-18");
        assert_eq!(refused.supported, ["2025-11-25", "2026-07-28"]);
        for odd in ["", "latest", "2026-7-28", "9999-99-99x", "2026/07/28"] {
            assert!(check_minimum("2025-03-26", odd).is_err(), "{odd:?}");
        }
    }
}
