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

#[derive(Template)]
#[template(path = "mail/welcome.txt")]
struct WelcomeText<'a> {
    product: &'a str,
    public_url: &'a str,
    link: &'a str,
    minutes: i64,
}

#[derive(Template)]
#[template(path = "mail/welcome.html")]
struct WelcomeHtml<'a> {
    product: &'a str,
    public_url: &'a str,
    link: &'a str,
    minutes: i64,
}

pub(super) fn rendered(r: askama::Result<String>) -> String {
    // The templates take only strings and numbers: rendering cannot fail
    // on data; should it fail anyway, the message says so rather than the
    // request panicking.
    r.unwrap_or_else(|e| format!("(this message could not be rendered: {e})"))
}

/// The password reset message carrying `link` (valid `minutes`).
pub fn password_reset(to: &str, product: &str, public_url: &str, link: &str, minutes: i64) -> Mail {
    Mail {
        to: to.to_owned(),
        subject: format!("Reset your {product} password"),
        text: rendered(
            ResetText {
                product,
                public_url,
                link,
                minutes,
            }
            .render(),
        ),
        html: rendered(
            ResetHtml {
                product,
                public_url,
                link,
                minutes,
            }
            .render(),
        ),
    }
}

/// The message to a user an administrator created without a password:
/// their account exists, and `link` (valid `minutes`) sets its password.
pub fn welcome(to: &str, product: &str, public_url: &str, link: &str, minutes: i64) -> Mail {
    Mail {
        to: to.to_owned(),
        subject: format!("An account was created for you at {product}"),
        text: rendered(
            WelcomeText {
                product,
                public_url,
                link,
                minutes,
            }
            .render(),
        ),
        html: rendered(
            WelcomeHtml {
                product,
                public_url,
                link,
                minutes,
            }
            .render(),
        ),
    }
}

/// The notice that a password was changed through a reset link.
pub fn password_changed(to: &str, product: &str, public_url: &str) -> Mail {
    Mail {
        to: to.to_owned(),
        subject: format!("Your {product} password was changed"),
        text: rendered(
            ChangedText {
                product,
                public_url,
            }
            .render(),
        ),
        html: rendered(
            ChangedHtml {
                product,
                public_url,
            }
            .render(),
        ),
    }
}

#[derive(Template)]
#[template(path = "mail/new_device.txt")]
struct NewDeviceText<'a> {
    product: &'a str,
    public_url: &'a str,
    user_agent: &'a str,
    ip: &'a str,
    at: &'a str,
}

#[derive(Template)]
#[template(path = "mail/new_device.html")]
struct NewDeviceHtml<'a> {
    product: &'a str,
    public_url: &'a str,
    user_agent: &'a str,
    ip: &'a str,
    at: &'a str,
}

/// The notice of a password sign-in from a device the account had not
/// used before (`notify_new_device`): the device's `user_agent`, the
/// address `ip` and the time `at` (UTC) as shown, and where to reset the
/// password if it was not the user.
pub fn new_device(
    to: &str,
    product: &str,
    public_url: &str,
    user_agent: &str,
    ip: &str,
    at: &str,
) -> Mail {
    Mail {
        to: to.to_owned(),
        subject: format!("New sign-in to your {product} account"),
        text: rendered(
            NewDeviceText {
                product,
                public_url,
                user_agent,
                ip,
                at,
            }
            .render(),
        ),
        html: rendered(
            NewDeviceHtml {
                product,
                public_url,
                user_agent,
                ip,
                at,
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
            PRODUCT,
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
        let m = password_changed("a@example.com", PRODUCT, "https://auth.example.com");
        assert!(
            m.text.contains("https://auth.example.com/forgot"),
            "{}",
            m.text
        );
        assert!(m.html.contains("Tessera"));
    }

    #[test]
    fn the_welcome_message_is_not_a_reset_and_carries_its_link() {
        let link = "https://auth.example.com/reset?token=abc&x=1";
        let m = welcome(
            "new@example.com",
            PRODUCT,
            "https://auth.example.com",
            link,
            45,
        );
        assert_eq!(m.to, "new@example.com");
        assert_eq!(m.subject, "An account was created for you at Tessera");
        for body in [&m.text, &m.html] {
            assert!(
                body.contains("An account was created for you at Tessera"),
                "{body}"
            );
            assert!(body.contains("choose your password"), "{body}");
            assert!(body.contains("45 minutes"), "{body}");
            assert!(body.contains("https://auth.example.com/forgot"), "{body}");
            // Not the reset wording: nobody asked for anything.
            assert!(!body.contains("asked to reset"), "{body}");
        }
        assert!(m.text.contains(link), "{}", m.text);
        assert!(
            m.html
                .contains("href=\"https://auth.example.com/reset?token=abc&#38;x=1\""),
            "{}",
            m.html
        );
    }

    #[test]
    fn the_new_device_notice_names_the_device_and_where_to_reset() {
        let m = new_device(
            "a@example.com",
            PRODUCT,
            "https://auth.example.com",
            "Mozilla/5.0 <script>x</script>",
            "203.0.113.7",
            "2026-12-07 22:46:04 UTC",
        );
        assert_eq!(m.subject, "New sign-in to your Tessera account");
        for body in [&m.text, &m.html] {
            assert!(body.contains("203.0.113.7"), "{body}");
            assert!(body.contains("2026-12-07 22:46:04 UTC"), "{body}");
            assert!(body.contains("https://auth.example.com/forgot"), "{body}");
            assert!(body.contains("Tessera"), "{body}");
        }
        assert!(m.text.contains("Mozilla/5.0 <script>x</script>"));
        // The user agent is the client's text: escaped in the HTML body.
        assert!(
            m.html
                .contains("Mozilla/5.0 &#60;script&#62;x&#60;/script&#62;"),
            "{}",
            m.html
        );
    }
}
