//! The messages Tessera sends, from askama templates (`templates/mail/`):
//! a plain-text and an HTML body each, with the product name and the
//! public URL.

use askama::Template;

use super::Mail;

/// The product name in every message.
pub const PRODUCT: &str = "Tessera";

#[derive(Template)]
#[template(path = "mail/password_reset.txt")]
struct ResetText<'a> {
    product: &'a str,
    public_url: &'a str,
    link: &'a str,
    minutes: i64,
}

#[derive(Template)]
#[template(path = "mail/password_reset.html")]
struct ResetHtml<'a> {
    product: &'a str,
    public_url: &'a str,
    link: &'a str,
    minutes: i64,
}

#[derive(Template)]
#[template(path = "mail/password_changed.txt")]
struct ChangedText<'a> {
    product: &'a str,
    public_url: &'a str,
}

#[derive(Template)]
#[template(path = "mail/password_changed.html")]
struct ChangedHtml<'a> {
    product: &'a str,
    public_url: &'a str,
}

fn rendered(r: askama::Result<String>) -> String {
    // The templates take only strings and numbers: rendering cannot fail
    // on data; should it fail anyway, the message says so rather than the
    // request panicking.
    r.unwrap_or_else(|e| format!("(this message could not be rendered: {e})"))
}

/// The password reset message carrying `link` (valid `minutes`).
pub fn password_reset(to: &str, public_url: &str, link: &str, minutes: i64) -> Mail {
    Mail {
        to: to.to_owned(),
        subject: format!("Reset your {PRODUCT} password"),
        text: rendered(
            ResetText {
                product: PRODUCT,
                public_url,
                link,
                minutes,
            }
            .render(),
        ),
        html: rendered(
            ResetHtml {
                product: PRODUCT,
                public_url,
                link,
                minutes,
            }
            .render(),
        ),
    }
}

/// The notice that a password was changed through a reset link.
pub fn password_changed(to: &str, public_url: &str) -> Mail {
    Mail {
        to: to.to_owned(),
        subject: format!("Your {PRODUCT} password was changed"),
        text: rendered(
            ChangedText {
                product: PRODUCT,
                public_url,
            }
            .render(),
        ),
        html: rendered(
            ChangedHtml {
                product: PRODUCT,
                public_url,
            }
            .render(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_bodies_carry_the_link_and_the_product() {
        let m = password_reset(
            "a@example.com",
            "https://auth.example.com",
            "https://auth.example.com/reset?token=abc&x=1",
            30,
        );
        assert!(
            m.text
                .contains("https://auth.example.com/reset?token=abc&x=1")
        );
        assert!(m.text.contains("30 minutes") && m.text.contains("Tessera"));
        // HTML-escaped in the HTML body.
        assert!(
            m.html
                .contains("href=\"https://auth.example.com/reset?token=abc&#38;x=1\""),
            "{}",
            m.html
        );
        let m = password_changed("a@example.com", "https://auth.example.com");
        assert!(
            m.text.contains("https://auth.example.com/forgot"),
            "{}",
            m.text
        );
        assert!(m.html.contains("Tessera"));
    }
}
