//! The subset of Markdown our docs use, turned into a man page: headings,
//! paragraphs, fenced code, tables (through tbl), bullet and numbered lists,
//! quotes, and inline code, bold, emphasis and links.

use crate::roff::escape;

/// The whole page: `name(section)`, titled from the document's first heading.
pub fn to_man(markdown: &str, name: &str, section: &str, version: &str, date: &str) -> String {
    let mut out = String::new();
    // Tells man(1) to run tbl first.
    out.push_str("'\\\" t\n");
    out.push_str(&format!(
        ".TH {} {section} \"{date}\" \"rootlesskit {version}\" \"rootlesskit manual\"\n",
        name.to_uppercase()
    ));
    let mut lines = markdown.lines().peekable();
    let mut title = String::new();
    while let Some(line) = lines.peek() {
        if let Some(t) = line.strip_prefix("# ") {
            title = t.trim().to_owned();
            lines.next();
            break;
        }
        if !line.trim().is_empty() {
            break;
        }
        lines.next();
    }
    out.push_str(".SH NAME\n");
    out.push_str(&format!("{} \\- {}\n", escape(name), escape(&title)));

    let mut state = Block::None;
    let mut table: Vec<Vec<String>> = Vec::new();
    let mut fence = false;
    for line in lines {
        if fence {
            if line.trim_start().starts_with("```") {
                out.push_str(".fi\n.RE\n");
                fence = false;
            } else {
                out.push_str(&escape(line));
                out.push('\n');
            }
            continue;
        }
        let trimmed = line.trim_start();
        if !table.is_empty() && !trimmed.starts_with('|') {
            render_table(&mut out, &table);
            table.clear();
        }
        if trimmed.starts_with("```") {
            out.push_str(".PP\n.RS 4\n.nf\n");
            fence = true;
            state = Block::None;
        } else if trimmed.starts_with('|') {
            let cells = split_row(trimmed);
            let separator = cells
                .iter()
                .all(|c| !c.is_empty() && c.chars().all(|ch| matches!(ch, '-' | ':' | ' ')));
            if !separator {
                table.push(cells);
            }
            state = Block::None;
        } else if let Some(h) = line.strip_prefix("## ").or_else(|| line.strip_prefix("# ")) {
            out.push_str(&format!(".SH \"{}\"\n", quoted(&h.trim().to_uppercase())));
            state = Block::None;
        } else if let Some(h) = line
            .strip_prefix("### ")
            .or_else(|| line.strip_prefix("#### "))
        {
            out.push_str(&format!(".SS \"{}\"\n", quoted(h.trim())));
            state = Block::None;
        } else if trimmed.is_empty() {
            state = Block::None;
        } else if let Some(item) = trimmed
            .strip_prefix("- ")
            .or_else(|| trimmed.strip_prefix("* "))
        {
            out.push_str(".IP \\(bu 2\n");
            push_text(&mut out, item);
            state = Block::Item;
        } else if let Some((n, item)) = numbered(trimmed) {
            out.push_str(&format!(".IP {n}. 4\n"));
            push_text(&mut out, item);
            state = Block::Item;
        } else if let Some(q) = trimmed.strip_prefix('>') {
            if state != Block::Quote {
                out.push_str(".PP\n");
            }
            push_text(&mut out, q.trim_start());
            state = Block::Quote;
        } else {
            // A continuation of a list item keeps its indentation.
            if state == Block::None {
                out.push_str(".PP\n");
                state = Block::Paragraph;
            }
            push_text(&mut out, trimmed);
        }
    }
    if fence {
        out.push_str(".fi\n.RE\n");
    }
    if !table.is_empty() {
        render_table(&mut out, &table);
    }
    out
}

#[derive(PartialEq)]
enum Block {
    None,
    Paragraph,
    Item,
    Quote,
}

fn quoted(s: &str) -> String {
    inline(s).replace('"', "\\(dq")
}

fn numbered(line: &str) -> Option<(&str, &str)> {
    let digits = line.find(|c: char| !c.is_ascii_digit())?;
    if digits == 0 {
        return None;
    }
    let rest = line[digits..].strip_prefix(". ")?;
    Some((&line[..digits], rest))
}

fn split_row(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
    // `\|` inside a cell is a literal bar.
    let mut cells = Vec::new();
    let mut cell = String::new();
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                cell.push('|');
                chars.next();
            }
            '|' => cells.push(std::mem::take(&mut cell).trim().to_owned()),
            _ => cell.push(c),
        }
    }
    cells.push(cell.trim().to_owned());
    cells
}

fn render_table(out: &mut String, rows: &[Vec<String>]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    if columns == 0 {
        return;
    }
    out.push_str(".PP\n.TS\nallbox;\n");
    let format = |bold: bool| {
        (0..columns)
            .map(|i| {
                let mut f = String::from(if bold { "lb" } else { "l" });
                if i + 1 == columns {
                    f.push('x');
                }
                f
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    out.push_str(&format(true));
    out.push('\n');
    out.push_str(&format(false));
    out.push_str(".\n");
    for row in rows {
        let cells: Vec<String> = (0..columns)
            .map(|i| {
                let text = row.get(i).map(String::as_str).unwrap_or("");
                format!("T{{\n{}\nT}}", inline(text))
            })
            .collect();
        out.push_str(&cells.join("\t"));
        out.push('\n');
    }
    out.push_str(".TE\n");
}

fn push_text(out: &mut String, text: &str) {
    out.push_str(&inline(text));
    out.push('\n');
}

/// Inline Markdown to roff: `code` and **bold** in bold, *emphasis* in
/// italics, `[text](target)` as text (with the address when it is absolute).
pub fn inline(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('`') {
            if let Some(end) = after.find('`') {
                out.push_str("\\fB");
                out.push_str(&escape_mid(&after[..end]));
                out.push_str("\\fR");
                rest = &after[end + 1..];
                continue;
            }
        }
        if let Some(after) = rest.strip_prefix("**") {
            if let Some(end) = after.find("**") {
                out.push_str("\\fB");
                out.push_str(&inline(&after[..end]));
                out.push_str("\\fR");
                rest = &after[end + 2..];
                continue;
            }
        }
        if let Some(after) = rest.strip_prefix('*') {
            if let Some(end) = after.find('*') {
                if end > 0 && !after.starts_with(' ') {
                    out.push_str("\\fI");
                    out.push_str(&inline(&after[..end]));
                    out.push_str("\\fR");
                    rest = &after[end + 1..];
                    continue;
                }
            }
        }
        if let Some(after) = rest.strip_prefix('[') {
            if let Some((label, target, len)) = link(after) {
                out.push_str(&inline(label));
                if target.contains("://") {
                    out.push_str(" <");
                    out.push_str(&escape_mid(target));
                    out.push('>');
                }
                rest = &after[len..];
                continue;
            }
        }
        let first = rest.chars().next().map_or(1, char::len_utf8);
        let next = rest[first..]
            .find(['`', '*', '['])
            .map(|i| i + first)
            .unwrap_or(rest.len());
        out.push_str(&escape_mid(&rest[..next]));
        rest = &rest[next..];
    }
    if out.starts_with('.') || out.starts_with('\'') {
        out.insert_str(0, "\\&");
    }
    out
}

/// `label](target)` after the opening bracket: (label, target, bytes used).
fn link(after: &str) -> Option<(&str, &str, usize)> {
    let close = after.find("](")?;
    let label = &after[..close];
    if label.contains('[') {
        return None;
    }
    let target_start = close + 2;
    let target_len = after[target_start..].find(')')?;
    Some((
        label,
        &after[target_start..target_start + target_len],
        target_start + target_len + 1,
    ))
}

/// Escaping for text that is not at the start of a line.
fn escape_mid(s: &str) -> String {
    let e = escape(s);
    e.strip_prefix("\\&").map(str::to_owned).unwrap_or(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_markup_becomes_fonts_and_links_lose_relative_targets() {
        assert_eq!(
            inline("run `rk-NAME` **now**, see [usage](usage.md) and [rk](https://x.example/a)"),
            "run \\fBrk\\-NAME\\fR \\fBnow\\fR, see usage and rk <https://x.example/a>"
        );
        assert_eq!(inline(".hidden request"), "\\&.hidden request");
        assert_eq!(inline("2 * 3 and a_b"), "2 * 3 and a_b");
        assert_eq!(inline("— ≥ `x`"), "— ≥ \\fBx\\fR");
    }

    #[test]
    fn document_structure_is_rendered() {
        let md = "# Title here\n\nIntro `x`.\n\n## 1. Part\n\n| a | b |\n|---|---|\n| `c` | d \\| e |\n\n```text\n.not a request\n```\n- item\n  more\n";
        let man = to_man(md, "rk-proto", "7", "0.1.0", "2026-01-01");
        assert!(man.starts_with("'\\\" t\n.TH RK-PROTO 7 "), "{man}");
        assert!(
            man.contains(".SH NAME\nrk\\-proto \\- Title here\n"),
            "{man}"
        );
        assert!(man.contains(".SH \"1. PART\"\n"), "{man}");
        assert!(man.contains(".TS\nallbox;\nlb lbx\nl lx.\nT{\na\nT}\tT{\nb\nT}\nT{\n\\fBc\\fR\nT}\tT{\nd | e\nT}\n.TE\n"), "{man}");
        assert!(man.contains(".nf\n\\&.not a request\n.fi\n"), "{man}");
        assert!(man.contains(".IP \\(bu 2\nitem\nmore\n"), "{man}");
    }
}
