//! Splits a reply into prose and fenced code blocks (```lang ... ```), the
//! one piece of Markdown the window renders specially: code in a monospace
//! box with a copy button. A fence still open while a reply streams is code.

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block<'a> {
    Text(&'a str),
    Code { lang: &'a str, code: &'a str },
}

pub fn blocks(text: &str) -> Vec<Block<'_>> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = find_fence(rest) {
        let before = rest[..open].trim_end_matches([' ', '\t']);
        if !before.trim().is_empty() {
            out.push(Block::Text(before.trim_matches('\n')));
        }
        let after_fence = &rest[open + 3..];
        let (lang, body) = match after_fence.find('\n') {
            Some(nl) => (after_fence[..nl].trim(), &after_fence[nl + 1..]),
            None => (after_fence.trim(), ""),
        };
        match find_fence(body) {
            Some(close) => {
                out.push(Block::Code { lang, code: body[..close].trim_end_matches('\n') });
                let tail = &body[close + 3..];
                rest = tail.find('\n').map_or("", |nl| &tail[nl + 1..]);
            }
            None => {
                out.push(Block::Code { lang, code: body.trim_end_matches('\n') });
                return out;
            }
        }
    }
    if !rest.trim().is_empty() {
        out.push(Block::Text(rest.trim_matches('\n')));
    }
    out
}

/// Byte offset of the next ``` that starts a line (after optional indentation).
fn find_fence(text: &str) -> Option<usize> {
    let mut line_start = 0;
    for line in text.split_inclusive('\n') {
        let indent = line.len() - line.trim_start_matches([' ', '\t']).len();
        if line[indent..].starts_with("```") {
            return Some(line_start + indent);
        }
        line_start += line.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_prose_and_code() {
        let text = "Here:\n```rust\nfn main() {}\n```\nDone.";
        assert_eq!(
            blocks(text),
            vec![Block::Text("Here:"), Block::Code { lang: "rust", code: "fn main() {}" }, Block::Text("Done.")]
        );
    }

    #[test]
    fn open_fence_while_streaming_and_inline_backticks() {
        assert_eq!(
            blocks("Use `x`:\n```\nlet a = 1;\n"),
            vec![Block::Text("Use `x`:"), Block::Code { lang: "", code: "let a = 1;" }]
        );
        assert_eq!(blocks("no fences, just ``` inside"), vec![Block::Text("no fences, just ``` inside")]);
        assert_eq!(blocks(""), vec![]);
    }
}
