//! How the commands report: one line per step with its outcome (pass, warn,
//! fail, or info), the detail and the fix, in colour on a terminal, or the
//! same steps as one JSON document (`--json`) for scripts.

use std::io::IsTerminal;

use serde_json::{json, Value};

/// A step's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// As it should be.
    Pass,
    /// Works, but some clients or a deploy will trip on it.
    Warn,
    /// Wrong: a client fails here, or the gate refuses.
    Fail,
    /// Not a judgement (a value shown, a step not reached).
    Info,
}

impl Status {
    /// Lower-case name, as in the JSON output.
    pub fn name(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "fail",
            Status::Info => "info",
        }
    }

    fn colour(self) -> &'static str {
        match self {
            Status::Pass => "\x1b[32m",
            Status::Warn => "\x1b[33m",
            Status::Fail => "\x1b[31m",
            Status::Info => "\x1b[2m",
        }
    }
}

/// One step of a report.
#[derive(Debug, Clone)]
pub struct Step {
    /// Short stable identifier (`challenge`, `audience`…), for scripts.
    pub id: String,
    /// What was looked at.
    pub title: String,
    /// The outcome.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to change, for a warning or a failure.
    pub fix: Option<String>,
}

impl Step {
    /// A step without a fix.
    pub fn new(id: &str, title: &str, status: Status, detail: impl Into<String>) -> Self {
        Step {
            id: id.to_owned(),
            title: title.to_owned(),
            status,
            detail: detail.into(),
            fix: None,
        }
    }

    /// The same step with `fix`.
    pub fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

/// The steps of one command, in order.
#[derive(Debug, Default)]
pub struct Report {
    /// The steps.
    pub steps: Vec<Step>,
}

impl Report {
    /// Adds a step.
    pub fn push(&mut self, step: Step) {
        self.steps.push(step);
    }

    /// Whether any step failed.
    pub fn failed(&self) -> bool {
        self.steps.iter().any(|s| s.status == Status::Fail)
    }

    /// The steps as JSON values.
    pub fn json_steps(&self) -> Value {
        Value::Array(
            self.steps
                .iter()
                .map(|s| {
                    json!({
                        "id": s.id,
                        "title": s.title,
                        "status": s.status.name(),
                        "detail": s.detail,
                        "fix": s.fix,
                    })
                })
                .collect(),
        )
    }

    /// Prints the steps for a person: colour only on a terminal (and never
    /// with `NO_COLOR` set).
    pub fn print_human(&self, heading: &str) {
        let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        println!("{heading}");
        for step in &self.steps {
            let label = format!("{:<4}", step.status.name().to_ascii_uppercase());
            let label = if colour {
                format!("{}{label}\x1b[0m", step.status.colour())
            } else {
                label
            };
            println!("  {label}  {}: {}", step.title, step.detail);
            if let Some(fix) = &step.fix {
                println!("        fix: {fix}");
            }
        }
        let count = |status| self.steps.iter().filter(|s| s.status == status).count();
        println!(
            "{} passed, {} warnings, {} failed",
            count(Status::Pass),
            count(Status::Warn),
            count(Status::Fail)
        );
    }
}
