//! The gate's bindings as `wrangler deploy` (and `wrangler dev`) would give
//! them, read from `wrangler.toml`: `[vars]`, `[[kv_namespaces]]`,
//! `[[ratelimits]]`, the routes, and with `--env NAME` the `[env.NAME]`
//! section under Wrangler's inheritance rules (bindings and vars are not
//! inherited; routes, `workers_dev` and `name` are). Secrets never live in
//! the file: they come from `.dev.vars` (`.dev.vars.NAME` with an
//! environment) beside it, then the process environment.
//!
//! This is the command line's [`Bindings`], so the configuration is parsed
//! by the gate's own [`portcullis_core::config::Config::parse`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use portcullis_core::config::{binding, Bindings};
use toml::Value;

/// The bindings that hold secrets: set with `wrangler secret put`, never in
/// `[vars]`.
pub const SECRETS: [&str; 6] = [
    binding::ORIGIN_AUTHORIZATION,
    binding::DPOP_NONCE_SECRET,
    binding::MCP_STATE_SECRET,
    binding::OAUTH_INTROSPECTION_CLIENT_SECRET,
    binding::ASSERTION_KEY,
    binding::ASSERTION_KEY_NEXT,
];

/// One route pattern that sends requests to the Worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePattern {
    /// `host/path*` as written (`*` a wildcard).
    pub pattern: String,
    /// A Custom Domain: the whole host goes to the Worker.
    pub custom_domain: bool,
}

/// What `wrangler.toml` (and the secrets beside it) binds.
#[derive(Debug, Default)]
pub struct Wrangler {
    /// The file read.
    pub path: PathBuf,
    /// The Worker's name (with the environment's suffix, as deployed).
    pub name: String,
    /// Text vars and secrets by name.
    pub text: BTreeMap<String, String>,
    /// Where each text value came from (`[vars]`, `.dev.vars`, `environment`).
    pub source: BTreeMap<String, &'static str>,
    /// Vars that are not strings: the gate reads them as unset.
    pub not_text: Vec<(String, &'static str)>,
    /// KV namespace bindings: name and id.
    pub kv: Vec<(String, String)>,
    /// Rate Limiting binding names.
    pub rate_limiters: Vec<String>,
    /// Durable Object namespace binding names.
    pub durable_objects: Vec<String>,
    /// Routes to the Worker.
    pub routes: Vec<RoutePattern>,
    /// Whether the Worker is served on `*.workers.dev`.
    pub workers_dev: bool,
    /// Secrets written into `[vars]`.
    pub secrets_in_vars: Vec<String>,
}

impl Bindings for Wrangler {
    fn text(&self, name: &str) -> Option<String> {
        self.text.get(name).cloned()
    }
    fn has_kv_namespace(&self, name: &str) -> bool {
        self.kv.iter().any(|(binding, _)| binding == name)
    }
    fn has_rate_limiter(&self, name: &str) -> bool {
        self.rate_limiters.iter().any(|binding| binding == name)
    }
    fn has_durable_object(&self, name: &str) -> bool {
        self.durable_objects.iter().any(|binding| binding == name)
    }
}

/// Reads `path` for environment `env` (the top level when `None`), with
/// secrets from `.dev.vars` and from `environment` (only the [`SECRETS`]
/// names are taken from it). `Err`: the file cannot be read or is not TOML,
/// or the environment is not defined.
pub fn load(
    path: &Path,
    env: Option<&str>,
    environment: &dyn Fn(&str) -> Option<String>,
) -> Result<Wrangler, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    let top: toml::Table = text
        .parse()
        .map_err(|error| format!("{} is not valid TOML: {error}", path.display()))?;
    let section = match env {
        None => &top,
        Some(name) => top
            .get("env")
            .and_then(|envs| envs.get(name))
            .and_then(Value::as_table)
            .ok_or_else(|| format!("{} has no [env.{name}] section", path.display()))?,
    };
    // Inheritable keys fall back to the top level; bindings and vars do not.
    let inherited = |key: &str| section.get(key).or_else(|| top.get(key));
    let base_name = top.get("name").and_then(Value::as_str).unwrap_or("worker");
    let name = match (env, section.get("name").and_then(Value::as_str)) {
        (Some(_), Some(own)) => own.to_owned(),
        (Some(env), None) => format!("{base_name}-{env}"),
        (None, _) => base_name.to_owned(),
    };
    let mut wrangler = Wrangler {
        path: path.to_owned(),
        name,
        workers_dev: inherited("workers_dev")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        ..Wrangler::default()
    };

    if let Some(vars) = section.get("vars").and_then(Value::as_table) {
        for (key, value) in vars {
            match value {
                Value::String(text) => {
                    wrangler.text.insert(key.clone(), text.clone());
                    wrangler.source.insert(key.clone(), "[vars]");
                    if SECRETS.contains(&key.as_str()) {
                        wrangler.secrets_in_vars.push(key.clone());
                    }
                }
                other => wrangler.not_text.push((key.clone(), other.type_str())),
            }
        }
    }
    for entry in array(section, "kv_namespaces") {
        if let Some(binding) = entry.get("binding").and_then(Value::as_str) {
            let id = entry.get("id").and_then(Value::as_str).unwrap_or_default();
            wrangler.kv.push((binding.to_owned(), id.to_owned()));
        }
    }
    for entry in array(section, "ratelimits") {
        if let Some(binding) = entry.get("name").and_then(Value::as_str) {
            wrangler.rate_limiters.push(binding.to_owned());
        }
    }
    // `[[durable_objects.bindings]]`: not inherited by environments.
    let durable_objects = section
        .get("durable_objects")
        .and_then(|table| table.get("bindings"))
        .and_then(Value::as_array);
    for entry in durable_objects.into_iter().flatten() {
        if let Some(binding) = entry.get("name").and_then(Value::as_str) {
            wrangler.durable_objects.push(binding.to_owned());
        }
    }
    if let Some(route) = inherited("route") {
        wrangler.routes.extend(route_pattern(route));
    }
    if let Some(Value::Array(routes)) = inherited("routes") {
        wrangler
            .routes
            .extend(routes.iter().filter_map(route_pattern));
    }

    // Secrets: `.dev.vars` (Wrangler's local secrets file), then the
    // process environment for the secret names only.
    let dir = path.parent().unwrap_or(Path::new("."));
    let dev_vars = env
        .map(|env| dir.join(format!(".dev.vars.{env}")))
        .filter(|file| file.exists())
        .unwrap_or_else(|| dir.join(".dev.vars"));
    if let Ok(contents) = std::fs::read_to_string(&dev_vars) {
        for (key, value) in parse_dotenv(&contents) {
            wrangler.text.insert(key.clone(), value);
            wrangler.source.insert(key, ".dev.vars");
        }
    }
    for secret in SECRETS {
        if let Some(value) = environment(secret) {
            wrangler.text.insert(secret.to_owned(), value);
            wrangler.source.insert(secret.to_owned(), "environment");
        }
    }
    Ok(wrangler)
}

fn array<'t>(table: &'t toml::Table, key: &str) -> impl Iterator<Item = &'t Value> {
    table
        .get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn route_pattern(value: &Value) -> Option<RoutePattern> {
    match value {
        Value::String(pattern) => Some(RoutePattern {
            pattern: pattern.clone(),
            custom_domain: false,
        }),
        Value::Table(table) => Some(RoutePattern {
            pattern: table.get("pattern")?.as_str()?.to_owned(),
            custom_domain: table
                .get("custom_domain")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        }),
        _ => None,
    }
}

/// `KEY=value` lines as Wrangler reads `.dev.vars` (dotenv): comments and
/// blank lines skipped, optional `export `, values optionally quoted.
fn parse_dotenv(contents: &str) -> Vec<(String, String)> {
    contents
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                return None;
            }
            let line = line.strip_prefix("export ").unwrap_or(line);
            let (key, value) = line.split_once('=')?;
            let value = value.trim();
            let value = ['"', '\'']
                .iter()
                .find_map(|q| {
                    value
                        .strip_prefix(*q)
                        .and_then(|rest| rest.strip_suffix(*q))
                })
                .unwrap_or(value);
            Some((key.trim().to_owned(), value.to_owned()))
        })
        .collect()
}

/// Whether a route pattern (`host/path*`, `*` matching any run of
/// characters) sends `url`'s host and path to the Worker.
pub fn routes_url(route: &RoutePattern, host: &str, path: &str) -> bool {
    let pattern = route
        .pattern
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    if route.custom_domain {
        return pattern.split('/').next() == Some(host);
    }
    wildcard(pattern, &format!("{host}{path}"))
}

/// `*`-wildcard match of the whole of `text`.
fn wildcard(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, tail)) => {
            let Some(rest) = text.strip_prefix(head) else {
                return false;
            };
            (0..=rest.len())
                .filter(|&at| rest.is_char_boundary(at))
                .any(|at| wildcard(tail, &rest[at..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_patterns_match_as_cloudflare_routes_do() {
        let route = |pattern: &str| RoutePattern {
            pattern: pattern.into(),
            custom_domain: false,
        };
        assert!(routes_url(
            &route("mcp.example.com/*"),
            "mcp.example.com",
            "/mcp"
        ));
        assert!(routes_url(
            &route("*example.com/mcp*"),
            "mcp.example.com",
            "/mcp"
        ));
        assert!(!routes_url(
            &route("mcp.example.com/mcp*"),
            "mcp.example.com",
            "/.well-known/oauth-protected-resource/mcp"
        ));
        assert!(!routes_url(
            &route("other.example.com/*"),
            "mcp.example.com",
            "/mcp"
        ));
        let domain = RoutePattern {
            pattern: "mcp.example.com".into(),
            custom_domain: true,
        };
        assert!(routes_url(&domain, "mcp.example.com", "/anything"));
    }

    #[test]
    fn dev_vars_read_as_dotenv() {
        let parsed = parse_dotenv("# c\nA=1\nexport B = \"two\"\n\nC='3'\nnot a line\n");
        assert_eq!(
            parsed,
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "two".into()),
                ("C".into(), "3".into())
            ]
        );
    }
}
