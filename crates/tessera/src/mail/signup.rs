//! The messages about joining: the email verification link and the
//! invitation (askama templates in `templates/mail/`, a plain-text and an
//! HTML body each, like [`super::templates`]).

use askama::Template;

use super::Mail;
use super::templates::PRODUCT;

#[derive(Template)]
#[template(path = "mail/verify_email.txt")]
struct VerifyText<'a> {
    product: &'a str,
    public_url: &'a str,
    email: &'a str,
    link: &'a str,
    hours: i64,
}

#[derive(Template)]
#[template(path = "mail/verify_email.html")]
struct VerifyHtml<'a> {
    product: &'a str,
    public_url: &'a str,
    email: &'a str,
    link: &'a str,
    hours: i64,
}

#[derive(Template)]
#[template(path = "mail/invitation.txt")]
struct InvitationText<'a> {
    product: &'a str,
    public_url: &'a str,
    email: &'a str,
    link: &'a str,
    days: i64,
}

#[derive(Template)]
#[template(path = "mail/invitation.html")]
struct InvitationHtml<'a> {
    product: &'a str,
    public_url: &'a str,
    email: &'a str,
    link: &'a str,
    days: i64,
}

fn rendered(r: askama::Result<String>) -> String {
    r.unwrap_or_else(|e| format!("(this message could not be rendered: {e})"))
}

/// The message asking `to` to confirm their address with `link` (valid
/// `hours`).
pub fn verify_email(to: &str, public_url: &str, link: &str, hours: i64) -> Mail {
    Mail {
        to: to.to_owned(),
        subject: format!("Confirm your email address for {PRODUCT}"),
        text: rendered(
            VerifyText {
                product: PRODUCT,
                public_url,
                email: to,
                link,
                hours,
            }
            .render(),
        ),
        html: rendered(
            VerifyHtml {
                product: PRODUCT,
                public_url,
                email: to,
                link,
                hours,
            }
            .render(),
        ),
    }
}

/// The invitation to register `to` with `link` (valid `days`).
pub fn invitation(to: &str, public_url: &str, link: &str, days: i64) -> Mail {
    Mail {
        to: to.to_owned(),
        subject: format!("You are invited to {PRODUCT}"),
        text: rendered(
            InvitationText {
                product: PRODUCT,
                public_url,
                email: to,
                link,
                days,
            }
            .render(),
        ),
        html: rendered(
            InvitationHtml {
                product: PRODUCT,
                public_url,
                email: to,
                link,
                days,
            }
            .render(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_bodies_carry_the_link_the_address_and_the_product() {
        let link = "https://auth.example.com/verify-email?token=abc&x=<y>";
        for mail in [
            verify_email("a@example.com", "https://auth.example.com", link, 24),
            invitation("a@example.com", "https://auth.example.com", link, 7),
        ] {
            assert!(mail.text.contains(link), "{}", mail.text);
            assert!(mail.text.contains("a@example.com"));
            assert!(mail.text.contains("Tessera, https://auth.example.com"));
            // HTML-escaped in the HTML body.
            assert!(
                mail.html.contains("token=abc&#38;x=&#60;y&#62;"),
                "{}",
                mail.html
            );
            assert!(mail.subject.contains("Tessera"));
        }
        assert!(
            verify_email("a@b.co", "u", "l", 24)
                .text
                .contains("24 hours")
        );
        assert!(invitation("a@b.co", "u", "l", 7).text.contains("7 days"));
    }
}
