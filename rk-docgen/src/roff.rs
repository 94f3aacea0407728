//! Small roff writing helpers for the sections clap_mangen does not make.

/// Text made safe for a roff text line: backslashes, minus signs (so that
/// options copy and paste as ASCII `-`), and a leading `.` or `'`, which
/// would make the line a request.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\e"),
            '-' => out.push_str("\\-"),
            _ => out.push(c),
        }
    }
    if out.starts_with('.') || out.starts_with('\'') {
        out.insert_str(0, "\\&");
    }
    out
}

/// A section heading.
pub fn section(out: &mut String, title: &str) {
    out.push_str(".SH ");
    out.push_str(&title.to_uppercase());
    out.push('\n');
}

/// A paragraph of plain text.
pub fn paragraph(out: &mut String, text: &str) {
    out.push_str(".PP\n");
    out.push_str(&escape(text));
    out.push('\n');
}

/// A tagged paragraph: `tag` in bold, then `text` indented.
pub fn tagged(out: &mut String, tag: &str, text: &str) {
    out.push_str(".TP\n\\fB");
    out.push_str(&escape(tag));
    out.push_str("\\fR\n");
    out.push_str(&escape(text));
    out.push('\n');
}

/// Lines kept as they are (no filling), e.g. an example.
pub fn verbatim(out: &mut String, lines: &str) {
    out.push_str(".PP\n.RS 4\n.nf\n");
    for line in lines.lines() {
        out.push_str(&escape(line));
        out.push('\n');
    }
    out.push_str(".fi\n.RE\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_escapes_are_neutralised() {
        assert_eq!(escape(".SH x"), "\\&.SH x");
        assert_eq!(escape("'quote"), "\\&'quote");
        assert_eq!(escape("a\\b --net"), "a\\eb \\-\\-net");
    }
}
