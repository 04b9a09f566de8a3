//! `%md`: Markdown to HTML with pulldown-cmark. Raw HTML in the source is
//! escaped, and links or images with script-capable URLs are neutralized,
//! so a note can never inject script into a viewer's page.

use pulldown_cmark::{CowStr, Event, Options, Parser, Tag, html};

use super::Interpreter;
use crate::notebook::model::{ResultMessage, Results};

/// The Markdown interpreter.
#[derive(Debug, Default)]
pub struct MarkdownInterpreter;

/// Whether a link target is safe to emit: relative, fragment, or one of a
/// few schemes that cannot run script.
fn is_safe_url(url: &str) -> bool {
    let lowered = url.trim().to_ascii_lowercase();
    match lowered.find(':') {
        None => true,
        // A colon after a path/query/fragment start is not a scheme.
        Some(colon) if lowered[..colon].contains(['/', '?', '#']) => true,
        Some(colon) => matches!(&lowered[..colon], "http" | "https" | "mailto"),
    }
}

fn neutralize(url: CowStr<'_>) -> CowStr<'_> {
    if is_safe_url(&url) {
        url
    } else {
        CowStr::Borrowed("#")
    }
}

/// Renders Markdown to sanitized HTML.
pub fn render(source: &str) -> String {
    let options =
        Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS;
    let events = Parser::new_ext(source, options).map(|event| match event {
        Event::Html(raw) | Event::InlineHtml(raw) => Event::Text(raw),
        Event::Start(Tag::Link {
            link_type,
            dest_url,
            title,
            id,
        }) => Event::Start(Tag::Link {
            link_type,
            dest_url: neutralize(dest_url),
            title,
            id,
        }),
        Event::Start(Tag::Image {
            link_type,
            dest_url,
            title,
            id,
        }) => Event::Start(Tag::Image {
            link_type,
            dest_url: neutralize(dest_url),
            title,
            id,
        }),
        other => other,
    });
    let mut out = String::from("<div class=\"markdown-body\">\n");
    html::push_html(&mut out, events);
    out.push_str("</div>");
    out
}

impl Interpreter for MarkdownInterpreter {
    fn name(&self) -> &'static str {
        "md"
    }

    fn run(&mut self, script: &str) -> Results {
        Results {
            code: "SUCCESS".to_owned(),
            msg: vec![ResultMessage::new("HTML", render(script))],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_markdown() {
        let html = render("# Title\n\n**hi** and a [link](https://example.com)");
        assert!(html.contains("<h1>Title</h1>"));
        assert!(html.contains("<strong>hi</strong>"));
        assert!(html.contains("href=\"https://example.com\""));
    }

    #[test]
    fn raw_html_is_escaped_not_passed_through() {
        let html = render("<script>alert(1)</script>\n\ntext <img src=x onerror=alert(2)>");
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
    }

    #[test]
    fn script_urls_are_neutralized() {
        for source in [
            "[x](javascript:alert(1))",
            "[x](  JavaScript:alert(1))",
            "![i](data:text/html;base64,PHNjcmlwdD4=)",
            "[x](vbscript:msgbox)",
        ] {
            let html = render(source);
            assert!(
                !html.to_ascii_lowercase().contains("script:"),
                "{source} -> {html}"
            );
            assert!(!html.contains("data:"), "{source} -> {html}");
        }
        assert!(render("[rel](docs/a:b.md)").contains("href=\"docs/a:b.md\""));
        assert!(render("[m](mailto:a@b.c)").contains("mailto:a@b.c"));
    }
}
