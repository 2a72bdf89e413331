//! The messages about joining: the email verification link and the
//! invitation (askama templates in `templates/mail/`, a plain-text and an
//! HTML body each, like [`super::templates`]).

use askama::Template;

use super::Mail;
use super::templates::rendered;

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

/// The message asking `to` to confirm their address with `link` (valid
/// `hours`).
pub fn verify_email(to: &str, product: &str, public_url: &str, link: &str, hours: i64) -> Mail {
    Mail {
        to: to.to_owned(),
        subject: format!("Confirm your email address for {product}"),
        text: rendered(
            VerifyText {
                product,
                public_url,
                email: to,
                link,
                hours,
            }
            .render(),
        ),
        html: rendered(
            VerifyHtml {
                product,
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
pub fn invitation(to: &str, product: &str, public_url: &str, link: &str, days: i64) -> Mail {
    Mail {
        to: to.to_owned(),
        subject: format!("You are invited to {product}"),
        text: rendered(
            InvitationText {
                product,
                public_url,
                email: to,
                link,
                days,
            }
            .render(),
        ),
        html: rendered(
            InvitationHtml {
                product,
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
    use crate::mail::templates::PRODUCT;

    #[test]
    fn both_bodies_carry_the_link_the_address_and_the_product() {
        let link = "https://auth.example.com/verify-email?token=abc&x=<y>";
        for mail in [
            verify_email(
                "a@example.com",
                PRODUCT,
                "https://auth.example.com",
                link,
                24,
            ),
            invitation(
                "a@example.com",
                PRODUCT,
                "https://auth.example.com",
                link,
                7,
            ),
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
            verify_email("a@b.co", PRODUCT, "u", "l", 24)
                .text
                .contains("24 hours")
        );
        assert!(
            invitation("a@b.co", PRODUCT, "u", "l", 7)
                .text
                .contains("7 days")
        );
        // Another product name, escaped in the HTML body.
        let m = invitation("a@b.co", "Acme <ID>", "u", "l", 7);
        assert_eq!(m.subject, "You are invited to Acme <ID>");
        assert!(m.text.contains("Acme <ID>") && !m.text.contains("Tessera"));
        assert!(m.html.contains("Acme &#60;ID&#62;") && !m.html.contains("Tessera"));
    }
}
