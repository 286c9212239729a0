//! One check's verdict, and the report `sip-ka doctor` prints: a line per
//! check (`ok`, `warn` or `fail`, its name, what it found) and, under a
//! warning or a failure, the fix in one line.

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    pub fn word(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub finding: String,
    /// What to do, for a warning or a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    pub fn ok(name: impl Into<String>, finding: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            status: Status::Ok,
            finding: finding.into(),
            fix: None,
        }
    }

    pub fn warn(
        name: impl Into<String>,
        finding: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            name: name.into(),
            status: Status::Warn,
            finding: finding.into(),
            fix: Some(fix.into()),
        }
    }

    pub fn fail(
        name: impl Into<String>,
        finding: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            name: name.into(),
            status: Status::Fail,
            finding: finding.into(),
            fix: Some(fix.into()),
        }
    }

    /// A failure, or a warning when `soft`.
    pub fn bad(
        soft: bool,
        name: impl Into<String>,
        finding: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        if soft {
            Check::warn(name, finding, fix)
        } else {
            Check::fail(name, finding, fix)
        }
    }
}

/// How many checks ended each way.
pub fn count(checks: &[Check], status: Status) -> usize {
    checks.iter().filter(|c| c.status == status).count()
}

/// The report as text: `ok    name          finding`, `      fix: ...`
/// under a warning or a failure, then one line of totals.
pub fn text(checks: &[Check]) -> String {
    let width = checks
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(0)
        .max(13);
    let mut out = String::new();
    for c in checks {
        out.push_str(&format!(
            "{:<5} {:<width$} {}\n",
            c.status.word(),
            c.name,
            c.finding
        ));
        if let Some(fix) = &c.fix {
            out.push_str(&format!("{:<5} {:<width$} fix: {fix}\n", "", ""));
        }
    }
    let (warn, fail) = (count(checks, Status::Warn), count(checks, Status::Fail));
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    out.push_str(&format!(
        "{} ok, {}, {}: {}\n",
        count(checks, Status::Ok),
        plural(warn, "warning"),
        plural(fail, "failure"),
        if fail == 0 {
            "ready for `sip-ka run`"
        } else {
            "fix the failures before `sip-ka run`"
        }
    ));
    out
}

/// The report as one JSON object: every check, and the totals.
pub fn json(checks: &[Check]) -> serde_json::Value {
    serde_json::json!({
        "checks": checks,
        "ok": count(checks, Status::Ok),
        "warn": count(checks, Status::Warn),
        "fail": count(checks, Status::Fail),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fix_goes_under_its_finding_and_totals_close_the_report() {
        let checks = vec![
            Check::ok("kernel", "6.1"),
            Check::fail(
                "bpffs",
                "/tmp is not a bpffs",
                "mount -t bpf bpf /sys/fs/bpf",
            ),
        ];
        let t = text(&checks);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "ok    kernel        6.1");
        assert_eq!(lines[1], "fail  bpffs         /tmp is not a bpffs");
        assert_eq!(
            lines[2],
            "                    fix: mount -t bpf bpf /sys/fs/bpf"
        );
        assert_eq!(
            lines[3],
            "1 ok, 0 warnings, 1 failure: fix the failures before `sip-ka run`"
        );
        let j = json(&checks);
        assert_eq!(j["fail"], 1);
        assert_eq!(j["checks"][1]["status"], "fail");
        assert!(j["checks"][0].get("fix").is_none());
    }
}
