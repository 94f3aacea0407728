//! The licence inventory: every crate linked into the binaries we install
//! (normal and build dependencies of the shipped workspace members, for this
//! host's platform, from `cargo metadata`), each licence expression checked
//! against an allow-list of licences compatible with Apache-2.0.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

/// Workspace members that are not installed: their own dependencies are not
/// linked into anything a user receives.
const NOT_SHIPPED: [&str; 2] = ["tests", "rk-docgen"];

pub fn check(allow_file: &Path, inventory: Option<&Path>, manifest: &Path) -> Result<(), String> {
    let allow_text = std::fs::read_to_string(allow_file)
        .map_err(|e| format!("cannot read {}: {e}", allow_file.display()))?;
    let allowed = parse_allow(&allow_text);
    let metadata = cargo_metadata(manifest)?;
    let crates = linked_crates(&metadata)?;

    let mut report = String::new();
    let mut refused = Vec::new();
    let mut by_licence: BTreeMap<String, usize> = BTreeMap::new();
    for c in &crates {
        let verdict = match &c.licence {
            None => Err(
                "no `license` field (only a licence file): review it and add an exception"
                    .to_owned(),
            ),
            Some(expr) => evaluate(expr, &allowed),
        };
        let shown = c.licence.as_deref().unwrap_or("(none)");
        *by_licence.entry(shown.to_owned()).or_default() += 1;
        let _ = writeln!(report, "{:<28} {:<10} {}", c.name, c.version, shown);
        if let Err(why) = verdict {
            refused.push(format!("{} {} ({shown}): {why}", c.name, c.version));
        }
    }
    let mut summary = format!(
        "# {} crates linked into the installed binaries, by licence:\n",
        crates.len()
    );
    for (licence, n) in &by_licence {
        let _ = writeln!(summary, "#   {n:>3}  {licence}");
    }
    let text = format!(
        "# Licence inventory (rootlesskit-docgen licences; allow-list {}).\n{summary}#\n# crate version licence\n{report}",
        allow_file.display()
    );
    match inventory {
        Some(path) => std::fs::write(path, &text)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?,
        None => print!("{text}"),
    }
    if refused.is_empty() {
        eprintln!(
            "rootlesskit-docgen: licences: {} crates, every licence allowed by {}",
            crates.len(),
            allow_file.display()
        );
        Ok(())
    } else {
        Err(format!(
            "licences not allowed by {} (remove the dependency, or add its licence there if it is compatible with \
             Apache-2.0):\n  {}",
            allow_file.display(),
            refused.join("\n  ")
        ))
    }
}

/// Identifiers one per line; `#` starts a comment.
pub fn parse_allow(text: &str) -> BTreeSet<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

fn cargo_metadata(manifest: &Path) -> Result<Value, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let vv = Command::new(&rustc)
        .arg("-vV")
        .output()
        .map_err(|e| format!("cannot run {rustc} -vV: {e}"))?;
    let host = String::from_utf8_lossy(&vv.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .ok_or_else(|| format!("{rustc} -vV named no host"))?;
    let out = Command::new(&cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--filter-platform",
            &host,
            "--manifest-path",
        ])
        .arg(manifest)
        .output()
        .map_err(|e| format!("cannot run {cargo} metadata: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("cargo metadata printed bad JSON: {e}"))
}

pub struct Crate {
    pub name: String,
    pub version: String,
    pub licence: Option<String>,
}

/// The shipped members and everything they link, sorted by name.
pub fn linked_crates(metadata: &Value) -> Result<Vec<Crate>, String> {
    let bad = |what: &str| format!("cargo metadata: unexpected shape ({what})");
    let packages = metadata["packages"]
        .as_array()
        .ok_or_else(|| bad("packages"))?;
    let by_id: HashMap<&str, &Value> = packages
        .iter()
        .filter_map(|p| Some((p["id"].as_str()?, p)))
        .collect();
    let nodes = metadata["resolve"]["nodes"]
        .as_array()
        .ok_or_else(|| bad("resolve.nodes"))?;
    let deps_of: HashMap<&str, Vec<&str>> = nodes
        .iter()
        .filter_map(|n| {
            let id = n["id"].as_str()?;
            let deps = n["deps"]
                .as_array()?
                .iter()
                .filter(|d| {
                    d["dep_kinds"].as_array().is_some_and(|kinds| {
                        kinds
                            .iter()
                            .any(|k| k["kind"].is_null() || k["kind"] == "build")
                    })
                })
                .filter_map(|d| d["pkg"].as_str())
                .collect();
            Some((id, deps))
        })
        .collect();
    let members = metadata["workspace_members"]
        .as_array()
        .ok_or_else(|| bad("workspace_members"))?;
    let mut todo: Vec<&str> = members
        .iter()
        .filter_map(Value::as_str)
        .filter(|id| {
            by_id
                .get(id)
                .and_then(|p| p["name"].as_str())
                .is_some_and(|name| !NOT_SHIPPED.contains(&name))
        })
        .collect();
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    while let Some(id) = todo.pop() {
        if !seen.insert(id) {
            continue;
        }
        todo.extend(deps_of.get(id).into_iter().flatten().copied());
    }
    let mut crates: Vec<Crate> = seen
        .iter()
        .filter_map(|id| by_id.get(id))
        .map(|p| Crate {
            name: p["name"].as_str().unwrap_or("?").to_owned(),
            version: p["version"].as_str().unwrap_or("?").to_owned(),
            licence: p["license"].as_str().map(str::to_owned),
        })
        .collect();
    crates.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
    Ok(crates)
}

/// Whether an SPDX expression is satisfied by the allowed identifiers: `OR`
/// needs one side, `AND` both, `X WITH EXCEPTION` what X needs (an
/// exception only grants more). `/` is the old spelling of `OR`.
pub fn evaluate(expr: &str, allowed: &BTreeSet<String>) -> Result<(), String> {
    let tokens = tokenize(expr);
    let mut parser = Parser {
        tokens: &tokens,
        at: 0,
        allowed,
    };
    let ok = parser.or_expr()?;
    if parser.at != tokens.len() {
        return Err(format!("cannot read the licence expression {expr:?}"));
    }
    if ok {
        Ok(())
    } else {
        Err("no allowed choice".to_owned())
    }
}

fn tokenize(expr: &str) -> Vec<String> {
    expr.replace('(', " ( ")
        .replace(')', " ) ")
        .replace('/', " OR ")
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

struct Parser<'a> {
    tokens: &'a [String],
    at: usize,
    allowed: &'a BTreeSet<String>,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<&'a str> {
        self.tokens.get(self.at).map(String::as_str)
    }

    fn or_expr(&mut self) -> Result<bool, String> {
        let mut ok = self.and_expr()?;
        while self.peek() == Some("OR") {
            self.at += 1;
            ok |= self.and_expr()?;
        }
        Ok(ok)
    }

    fn and_expr(&mut self) -> Result<bool, String> {
        let mut ok = self.with_expr()?;
        while self.peek() == Some("AND") {
            self.at += 1;
            ok &= self.with_expr()?;
        }
        Ok(ok)
    }

    fn with_expr(&mut self) -> Result<bool, String> {
        let ok = self.primary()?;
        if self.peek() == Some("WITH") {
            self.at += 2;
            if self.at > self.tokens.len() {
                return Err("WITH without an exception".to_owned());
            }
        }
        Ok(ok)
    }

    fn primary(&mut self) -> Result<bool, String> {
        match self.peek() {
            Some("(") => {
                self.at += 1;
                let ok = self.or_expr()?;
                if self.peek() != Some(")") {
                    return Err("unbalanced parenthesis".to_owned());
                }
                self.at += 1;
                Ok(ok)
            }
            Some(id) if !matches!(id, ")" | "AND" | "OR" | "WITH") => {
                self.at += 1;
                let base = id.strip_suffix('+').unwrap_or(id);
                Ok(self.allowed.contains(base))
            }
            other => Err(format!("a licence identifier expected, found {other:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> BTreeSet<String> {
        parse_allow("Apache-2.0 # the project's\nMIT\n\nUnicode-3.0\n")
    }

    #[test]
    fn expressions_are_judged_by_their_operators() {
        let a = allowed();
        assert!(evaluate("MIT OR Apache-2.0", &a).is_ok());
        assert!(evaluate("MIT/Apache-2.0", &a).is_ok());
        assert!(evaluate("(MIT OR Apache-2.0) AND Unicode-3.0", &a).is_ok());
        assert!(evaluate("Apache-2.0 WITH LLVM-exception", &a).is_ok());
        assert!(evaluate("GPL-3.0-only", &a).is_err());
        assert!(evaluate("MIT AND GPL-2.0-or-later", &a).is_err());
        assert!(evaluate("GPL-2.0-only OR MIT", &a).is_ok());
        assert!(evaluate("(MIT OR", &a).is_err());
        assert!(evaluate("MIT MIT", &a).is_err());
    }

    #[test]
    fn only_shipped_members_and_their_linked_dependencies_count() {
        let m: Value = serde_json::from_str(
            r#"{
            "packages": [
                {"id": "core", "name": "rootlesskit-core", "version": "0.1.0", "license": "Apache-2.0"},
                {"id": "t", "name": "tests", "version": "0.1.0", "license": "Apache-2.0"},
                {"id": "lib", "name": "lib", "version": "1.0.0", "license": "MIT"},
                {"id": "bld", "name": "bld", "version": "1.0.0", "license": "MIT"},
                {"id": "dev", "name": "devonly", "version": "1.0.0", "license": "GPL-3.0"},
                {"id": "tdep", "name": "testdep", "version": "1.0.0", "license": "GPL-3.0"}
            ],
            "workspace_members": ["core", "t"],
            "resolve": {"nodes": [
                {"id": "core", "deps": [
                    {"pkg": "lib", "dep_kinds": [{"kind": null}]},
                    {"pkg": "bld", "dep_kinds": [{"kind": "build"}]},
                    {"pkg": "dev", "dep_kinds": [{"kind": "dev"}]}
                ]},
                {"id": "t", "deps": [{"pkg": "tdep", "dep_kinds": [{"kind": null}]}]},
                {"id": "lib", "deps": []}, {"id": "bld", "deps": []},
                {"id": "dev", "deps": []}, {"id": "tdep", "deps": []}
            ]}
        }"#,
        )
        .unwrap();
        let names: Vec<String> = linked_crates(&m)
            .unwrap()
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(names, ["bld", "lib", "rootlesskit-core"]);
    }
}
