//! `portcullis check`: the configuration in `wrangler.toml` parsed by the
//! gate's own parser ([`Config::parse`]), so every problem the deployed gate
//! would log as `config_invalid` is named here, all at once, with the
//! parser's warnings (`offline_access` advertised among them). Then what a
//! deploy would trip over that the gate cannot see from inside: a resource
//! or its RFC 9728 metadata URL that no route sends to the Worker, an
//! audience other than the resource (RFC 8707 §2: clients ask for the
//! resource URI), secrets written into `[vars]`, a placeholder KV
//! namespace id.

use portcullis_core::config::Config;
use url::Url;

use crate::output::{Report, Status, Step};
use crate::wrangler::{routes_url, Wrangler, SECRETS};

/// Checks `wrangler`'s bindings; the report fails when the gate would
/// refuse the configuration.
pub fn run(wrangler: &Wrangler) -> Report {
    let mut report = Report::default();
    for (name, kind) in &wrangler.not_text {
        report.push(
            Step::new(
                "var_not_text",
                name,
                Status::Fail,
                format!("is a TOML {kind}: the gate reads vars as text only, so it sees {name} as unset"),
            )
            .fix(format!("write {name} as a string (JSON values inside single quotes)")),
        );
    }
    for name in &wrangler.secrets_in_vars {
        report.push(
            Step::new(
                "secret_in_vars",
                name,
                Status::Warn,
                "a secret written into [vars], so it is in the repository",
            )
            .fix(format!(
                "remove it from [vars] and run `npx wrangler secret put {name}`"
            )),
        );
    }
    for (binding, id) in &wrangler.kv {
        if !id.is_empty() && id.chars().all(|c| c == '0') {
            report.push(
                Step::new(
                    "kv_placeholder",
                    binding,
                    Status::Warn,
                    "the KV namespace id is a placeholder: `wrangler deploy` will refuse it",
                )
                .fix(format!(
                    "run `npx wrangler kv namespace create {binding}` and put the id it prints in wrangler.toml"
                )),
            );
        }
    }

    let config = match Config::parse(wrangler) {
        Ok(config) => config,
        Err(error) => {
            for problem in &error.problems {
                let mut step = Step::new(
                    "config",
                    problem.binding,
                    Status::Fail,
                    problem.problem.clone(),
                );
                if let Some(fix) = fix_for(problem.binding, wrangler) {
                    step = step.fix(fix);
                }
                report.push(step);
            }
            return report;
        }
    };

    for warning in &config.warnings {
        let (binding, what) = warning
            .split_once(": ")
            .unwrap_or(("configuration", warning));
        report.push(Step::new("config_warning", binding, Status::Warn, what));
    }
    for route in &config.routes {
        deploy_warnings(&mut report, wrangler, route);
    }
    let issuers: Vec<&str> = config.issuers.iter().map(|i| i.issuer.as_str()).collect();
    report.push(Step::new(
        "config",
        "configuration",
        Status::Pass,
        format!(
            "the gate accepts it: {} route(s) ({}), issuer(s) {}",
            config.routes.len(),
            config
                .routes
                .iter()
                .map(|r| r.resource.uri.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            issuers.join(", ")
        ),
    ));
    report
}

/// Where a missing secret goes (the parser's own words say what is wrong
/// with any other binding).
fn fix_for(binding: &str, wrangler: &Wrangler) -> Option<String> {
    (SECRETS.contains(&binding) && !wrangler.text.contains_key(binding)).then(|| {
        format!("a secret: put it in .dev.vars beside wrangler.toml (or the environment) to check it, and `npx wrangler secret put {binding}` to deploy it")
    })
}

fn deploy_warnings(
    report: &mut Report,
    wrangler: &Wrangler,
    route: &portcullis_core::config::Route,
) {
    let resource = &route.resource.uri;
    if route.audiences.iter().all(|aud| aud != resource) {
        report.push(
            Step::new(
                "audience",
                resource,
                Status::Warn,
                format!(
                    "accepted audience(s) {} differ from the resource: MCP clients send resource={resource} (RFC 8707), so authorization servers put that in aud",
                    route.audiences.join(", ")
                ),
            )
            .fix("leave OAUTH_AUDIENCE (or the route's audience) unset, or make sure the authorization server issues that audience"),
        );
    }
    let Ok(url) = Url::parse(resource) else {
        return;
    };
    let host = url.host_str().unwrap_or_default();
    let loopback = matches!(host, "127.0.0.1" | "localhost" | "[::1]");
    if loopback {
        return;
    }
    let on_workers_dev = wrangler.workers_dev
        && host.ends_with(".workers.dev")
        && host.starts_with(&format!("{}.", wrangler.name));
    for path in [&route.resource.path, &route.resource.metadata_path] {
        let routed = on_workers_dev
            || wrangler
                .routes
                .iter()
                .any(|pattern| routes_url(pattern, host, path));
        if !routed {
            let what = if path == &route.resource.metadata_path {
                "its protected resource metadata"
            } else {
                "the resource"
            };
            report.push(
                Step::new(
                    "routing",
                    resource,
                    Status::Warn,
                    format!("no route in wrangler.toml sends {host}{path} ({what}) to this Worker"),
                )
                .fix(format!(
                    "add `routes = [{{ pattern = \"{host}\", custom_domain = true }}]`, or a pattern such as \"{host}/*\""
                )),
            );
        }
    }
}
