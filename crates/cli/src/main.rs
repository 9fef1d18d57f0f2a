//! `portcullis`: the gate's command line, on the same core library as the
//! worker, so it parses configuration and decides exactly as the gate does.
//!
//! - `check`: the configuration in `wrangler.toml`, every problem at once.
//! - `explain`: the gate's decision for a token, check by check.
//! - `doctor`: a live MCP endpoint walked the way MCP clients discover it.
//!
//! Exit status: 0 when all is well (the configuration is accepted, the token
//! would be let through, no step failed), 1 when not, 2 for a usage error or
//! a configuration explain cannot run with.

mod check;
mod doctor;
mod explain;
mod http;
mod output;
mod wrangler;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use portcullis_core::config::Config;

const USAGE: &str = "\
portcullis: check a configuration, explain a refusal, diagnose a live MCP server

USAGE:
  portcullis check   [--config wrangler.toml] [--env NAME] [--json]
  portcullis explain [TOKEN | -] [--token-env NAME | --token-file PATH]
                     [--config wrangler.toml] [--env NAME] [--route PATH|URL]
                     [--method JSONRPC_METHOD] [--tool NAME] [--http-method POST]
                     [--protocol-version 2025-11-25] [--at UNIX_SECONDS] [--json]
  portcullis doctor  URL [--token-env NAME | --token-file PATH] [--origin ORIGIN]
                     [--timeout-ms 10000] [--json]

Secrets are read from .dev.vars beside wrangler.toml, then from the environment.
Give tokens through --token-env, --token-file or `-` (standard input) rather
than on the command line, where shell history and process lists keep them.
Exit status: 0 all well, 1 refused or failed, 2 usage or configuration error.
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("portcullis: {message}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// Parsed flags: `--name value` pairs, bare switches and positionals.
struct Args {
    positional: Vec<String>,
    values: Vec<(String, String)>,
    json: bool,
}

impl Args {
    fn parse(args: &[String], with_value: &[&str]) -> Result<Args, String> {
        let mut parsed = Args {
            positional: Vec::new(),
            values: Vec::new(),
            json: false,
        };
        let mut iter = args.iter();
        while let Some(arg) = iter.next() {
            if arg == "--json" {
                parsed.json = true;
            } else if let Some(name) = arg.strip_prefix("--") {
                let (name, inline) = match name.split_once('=') {
                    Some((name, value)) => (name, Some(value.to_owned())),
                    None => (name, None),
                };
                if !with_value.contains(&name) {
                    return Err(format!("unknown option --{name}"));
                }
                let value = match inline {
                    Some(value) => value,
                    None => iter
                        .next()
                        .cloned()
                        .ok_or(format!("--{name} needs a value"))?,
                };
                parsed.values.push((name.to_owned(), value));
            } else {
                parsed.positional.push(arg.clone());
            }
        }
        Ok(parsed)
    }

    fn value(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn run(args: &[String]) -> Result<ExitCode, String> {
    let Some((command, rest)) = args.split_first() else {
        print!("{USAGE}");
        return Ok(ExitCode::from(2));
    };
    match command.as_str() {
        "check" => check(rest),
        "explain" => explain(rest),
        "doctor" => doctor(rest),
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        "--version" | "-V" => {
            println!("portcullis {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
        other => Err(format!("unknown command {other}")),
    }
}

fn load_wrangler(args: &Args) -> Result<wrangler::Wrangler, String> {
    let path = PathBuf::from(args.value("config").unwrap_or("wrangler.toml"));
    wrangler::load(&path, args.value("env"), &|name| std::env::var(name).ok())
}

fn exit(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn check(rest: &[String]) -> Result<ExitCode, String> {
    let args = Args::parse(rest, &["config", "env"])?;
    if let Some(extra) = args.positional.first() {
        return Err(format!("check takes no argument {extra}"));
    }
    let wrangler = load_wrangler(&args)?;
    let report = check::run(&wrangler);
    let heading = match args.value("env") {
        Some(env) => format!("check {} [env.{env}]", wrangler.path.display()),
        None => format!("check {}", wrangler.path.display()),
    };
    if args.json {
        let out = serde_json::json!({
            "command": "check",
            "config": wrangler.path.display().to_string(),
            "env": args.value("env"),
            "ok": !report.failed(),
            "steps": report.json_steps(),
        });
        println!("{out}");
    } else {
        report.print_human(&heading);
    }
    Ok(exit(!report.failed()))
}

/// The token from `--token-env`, `--token-file`, `-` (standard input) or
/// the first positional; trimmed.
fn token(args: &Args, positional: Option<&str>) -> Result<Option<String>, String> {
    let token = if let Some(name) = args.value("token-env") {
        Some(std::env::var(name).map_err(|_| format!("the environment has no {name}"))?)
    } else if let Some(path) = args.value("token-file") {
        Some(
            std::fs::read_to_string(path)
                .map_err(|error| format!("cannot read {path}: {error}"))?,
        )
    } else if positional == Some("-") {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .map_err(|error| format!("cannot read the token from standard input: {error}"))?;
        Some(text)
    } else {
        positional.map(str::to_owned)
    };
    Ok(token.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()))
}

fn explain(rest: &[String]) -> Result<ExitCode, String> {
    let args = Args::parse(
        rest,
        &[
            "config",
            "env",
            "route",
            "method",
            "tool",
            "http-method",
            "protocol-version",
            "at",
            "token-env",
            "token-file",
        ],
    )?;
    let token = token(&args, args.positional.first().map(String::as_str))?
        .ok_or("explain needs a token: --token-env NAME, --token-file PATH, `-` for standard input, or TOKEN")?;
    let wrangler = load_wrangler(&args)?;
    let config = Config::parse(&wrangler).map_err(|error| {
        format!(
            "the gate refuses this configuration (run `portcullis check` for the details): {error}"
        )
    })?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let at = match args.value("at") {
        Some(at) => at
            .parse()
            .map_err(|_| format!("--at {at} is not a number of seconds since the epoch"))?,
        None => now,
    };
    let tool = args.value("tool").map(str::to_owned);
    let options = explain::Options {
        route: args.value("route").map(str::to_owned),
        http_method: args.value("http-method").unwrap_or("POST").to_owned(),
        rpc_method: args.value("method").map(str::to_owned).unwrap_or_else(|| {
            if tool.is_some() {
                "tools/call"
            } else {
                "tools/list"
            }
            .to_owned()
        }),
        tool,
        protocol_version: args
            .value("protocol-version")
            .unwrap_or("2025-11-25")
            .to_owned(),
        at,
    };
    let explanation = explain::run(&config, &token, &options)?;
    if args.json {
        println!("{}", explanation.json());
    } else {
        explanation.report.print_human("explain");
        println!(
            "decision: {} (log reason: {})",
            explanation.verdict, explanation.reason
        );
        if let Some(status) = explanation.status {
            println!("answer:   {status}");
        }
        if let Some(challenge) = &explanation.challenge {
            println!("WWW-Authenticate: {challenge}");
        }
    }
    Ok(exit(explanation.verdict == "allow"))
}

fn doctor(rest: &[String]) -> Result<ExitCode, String> {
    let args = Args::parse(rest, &["token-env", "token-file", "origin", "timeout-ms"])?;
    let url = match args.positional.as_slice() {
        [url] => url.clone(),
        _ => return Err("doctor needs exactly one URL".to_owned()),
    };
    let token = token(&args, None)?;
    let timeout_ms: u64 = match args.value("timeout-ms") {
        Some(ms) => ms
            .parse()
            .map_err(|_| format!("--timeout-ms {ms} is not a number"))?,
        None => 10_000,
    };
    let options = doctor::Options {
        url: url.clone(),
        token,
        browser_origin: args
            .value("origin")
            .unwrap_or("https://claude.ai")
            .to_owned(),
        timeout: Duration::from_millis(timeout_ms.clamp(100, 120_000)),
    };
    let report = doctor::run(&options);
    if args.json {
        let out = serde_json::json!({
            "command": "doctor",
            "url": url,
            "ok": !report.failed(),
            "steps": report.json_steps(),
        });
        println!("{out}");
    } else {
        report.print_human(&format!("doctor {url}"));
    }
    Ok(exit(!report.failed()))
}
