//! A `clap::Command` rebuilt from a program's own `--help` output, for a
//! program whose clap definition is not reachable as a library (rootlessctl
//! keeps its `Cli` in its `main.rs`). The help text is clap's, so its shape is
//! known: the about text, `Usage:`, then `Commands:`, `Arguments:` and
//! `Options:` sections of two-column entries (or, with long help, the help on
//! the following, more deeply indented lines).

use clap::{Arg, ArgAction, Command};
use std::path::Path;
use std::process::Command as Process;

/// The command tree of `program`: its `--help` and each subcommand's.
pub fn command_of(program: &Path, name: &'static str) -> Result<Command, String> {
    let top = help_of(program, &[])?;
    let mut cmd = parse(name, &top)?;
    let version = run(program, &["--version"])?;
    if let Some(v) = version.split_whitespace().nth(1) {
        cmd = cmd.version(leak(v.to_owned()));
    }
    let subcommands: Vec<(String, String)> = entries(&top, "Commands")
        .into_iter()
        .filter(|(n, _)| n != "help")
        .collect();
    for (sub, about) in subcommands {
        let text = help_of(program, &[&sub])?;
        let parsed = parse_leaked(&sub, &text)?;
        // Long help shows the long about: keep it, with the list's short one.
        let long = parsed.get_about().map(|a| a.to_string());
        let mut parsed = parsed.about(about.clone());
        if let Some(long) = long.filter(|l| *l != about) {
            parsed = parsed.long_about(long);
        }
        cmd = cmd.subcommand(parsed);
    }
    Ok(cmd)
}

fn run(program: &Path, args: &[&str]) -> Result<String, String> {
    let out = Process::new(program)
        .args(args)
        .env_remove("ROOTLESSKIT_STATE_DIR")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} {} exited with {}: {}",
            program.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    String::from_utf8(out.stdout)
        .map_err(|_| format!("{} printed non-UTF-8 help", program.display()))
}

fn help_of(program: &Path, sub: &[&str]) -> Result<String, String> {
    let mut args: Vec<&str> = sub.to_vec();
    args.push("--help");
    run(program, &args)
}

fn parse_leaked(name: &str, text: &str) -> Result<Command, String> {
    parse(leak(name.to_owned()), text)
}

/// clap's names are `&'static str` (without its "string" feature, which would
/// change every binary of the workspace); these few strings live as long as
/// the tool anyway.
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// One command from its help text.
pub fn parse(name: &'static str, text: &str) -> Result<Command, String> {
    let usage_at = text
        .find("Usage:")
        .ok_or_else(|| format!("no 'Usage:' in the help of {name}"))?;
    let about = text[..usage_at].trim();
    let mut cmd = Command::new(name).disable_help_subcommand(true);
    if !about.is_empty() {
        let first = about.split("\n\n").next().unwrap_or(about).trim();
        cmd = cmd.about(first.to_owned());
        if first != about {
            cmd = cmd.long_about(about.to_owned());
        }
    }
    for (spec, help) in entries(text, "Arguments") {
        let required = spec.starts_with('<');
        let multiple = spec.ends_with("...");
        let value = spec
            .trim_end_matches("...")
            .trim_matches(|c| matches!(c, '<' | '>' | '[' | ']'))
            .to_owned();
        let value = leak(value);
        let mut arg = Arg::new(value)
            .value_name(value)
            .required(required)
            .help(help);
        if multiple {
            arg = arg.num_args(1..).action(ArgAction::Append);
        }
        cmd = cmd.arg(arg);
    }
    for (spec, help) in entries(text, "Options") {
        let option = parse_option(&spec)
            .ok_or_else(|| format!("cannot read the option {spec:?} of {name}"))?;
        if matches!(option.long.as_deref(), Some("help" | "version")) {
            continue;
        }
        let id = option
            .long
            .clone()
            .or_else(|| option.short.map(String::from))
            .unwrap_or_default();
        let mut arg = Arg::new(leak(id)).help(help);
        if let Some(l) = option.long {
            arg = arg.long(leak(l));
        }
        if let Some(s) = option.short {
            arg = arg.short(s);
        }
        arg = match option.value {
            Some(v) => arg.value_name(leak(v)).action(ArgAction::Set),
            None => arg.action(ArgAction::SetTrue),
        };
        cmd = cmd.arg(arg);
    }
    Ok(cmd)
}

struct OptionSpec {
    short: Option<char>,
    long: Option<String>,
    value: Option<String>,
}

/// `-s, --long <VALUE>`, `--long`, `-s`.
fn parse_option(spec: &str) -> Option<OptionSpec> {
    let mut option = OptionSpec {
        short: None,
        long: None,
        value: None,
    };
    for token in spec.split_whitespace() {
        let token = token.trim_end_matches(',');
        // `--flag=<v>` and `--flag[=<v>]`: the name, then the value.
        let (name, value) = match token.find(['=', '[']) {
            Some(i) if token.starts_with('-') => (&token[..i], Some(&token[i..])),
            _ if token.starts_with('-') => (token, None),
            _ => ("", Some(token)),
        };
        if let Some(l) = name.strip_prefix("--") {
            option.long = Some(l.to_owned());
        } else if let Some(s) = name.strip_prefix('-') {
            let mut chars = s.chars();
            option.short = Some(chars.next()?);
            if chars.next().is_some() {
                return None;
            }
        } else if !name.is_empty() {
            return None;
        }
        if let Some(v) = value {
            let v = v.trim_matches(|c| matches!(c, '[' | ']' | '=' | '<' | '>'));
            option.value = Some(v.to_owned());
        }
    }
    (option.short.is_some() || option.long.is_some()).then_some(option)
}

/// The entries of section `heading` ("Commands", "Arguments", "Options"):
/// (first column, help).
pub fn entries(text: &str, heading: &str) -> Vec<(String, String)> {
    let title = format!("{heading}:");
    let mut out: Vec<(String, String)> = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        if !line.starts_with(' ') && !line.is_empty() {
            inside = line.trim_end() == title;
            continue;
        }
        if !inside || line.trim().is_empty() {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        if indent >= 8 {
            // Long help: the entry's help on its own lines.
            if let Some((_, help)) = out.last_mut() {
                if !help.is_empty() {
                    help.push(' ');
                }
                help.push_str(line.trim());
            }
            continue;
        }
        let body = line.trim_start();
        let (spec, help) = match body.find("  ") {
            Some(i) => (body[..i].trim(), body[i..].trim()),
            None => (body.trim(), ""),
        };
        out.push((spec.to_owned(), help.to_owned()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOP: &str = "RootlessKit API client\n\nUsage: rootlessctl [OPTIONS] <COMMAND>\n\nCommands:\n  list-ports    List ports\n  help          Print this message\n\nOptions:\n      --debug           debug mode\n      --socket <value>  Path to api.sock\n  -h, --help            Print help\n";
    const LONG: &str = "Add exposed ports. e.g. \"127.0.0.1:8080:80/tcp\".\n\nUsage: rootlessctl add-ports [OPTIONS] [SPEC]...\n\nArguments:\n  [SPEC]...\n          PARENTIP:PARENTPORT/PROTO\n\nOptions:\n      --json\n          Prints as JSON\n\n  -s, --socket <value>\n          Path to api.sock\n\n  -h, --help\n          Print help (see a summary with '-h')\n";

    #[test]
    fn short_help_becomes_a_command() {
        assert_eq!(
            entries(TOP, "Commands")[0],
            ("list-ports".into(), "List ports".into())
        );
        let cmd = parse("rootlessctl", TOP).unwrap();
        assert_eq!(
            cmd.get_about().unwrap().to_string(),
            "RootlessKit API client"
        );
        let names: Vec<_> = cmd
            .get_arguments()
            .map(|a| a.get_id().to_string())
            .collect();
        assert_eq!(names, ["debug", "socket"]);
        let socket = cmd
            .get_arguments()
            .find(|a| a.get_id() == "socket")
            .unwrap();
        assert_eq!(socket.get_value_names().unwrap()[0], "value");
    }

    #[test]
    fn long_help_entries_take_their_following_lines() {
        let cmd = parse("add-ports", LONG).unwrap();
        let spec = cmd.get_arguments().find(|a| a.get_id() == "SPEC").unwrap();
        assert_eq!(
            spec.get_help().unwrap().to_string(),
            "PARENTIP:PARENTPORT/PROTO"
        );
        assert!(!spec.is_required_set());
        let socket = cmd
            .get_arguments()
            .find(|a| a.get_id() == "socket")
            .unwrap();
        assert_eq!(socket.get_short(), Some('s'));
        assert_eq!(socket.get_help().unwrap().to_string(), "Path to api.sock");
        assert!(cmd.get_arguments().all(|a| a.get_id() != "help"));
    }
}
