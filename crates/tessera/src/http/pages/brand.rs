//! The pages' product name and logo (`product_name`, `logo_url`), and the
//! Content-Security-Policy that lets an external logo load.
//!
//! Templates reach the settings through a task-local that `http::middleware`
//! sets around every request ([`scope`]), so no page has to thread them
//! through its `Nav` or its error paths. Outside that scope (a unit test
//! rendering a template) the defaults apply.

use std::future::Future;
use std::sync::Arc;

use crate::config::Settings;

tokio::task_local! {
    static SETTINGS: Arc<Settings>;
}

/// The default product name.
pub const DEFAULT_PRODUCT_NAME: &str = "Tessera";

/// The pages' Content-Security-Policy without a logo from elsewhere.
pub(crate) const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'";

/// Runs `f` (a request) with `settings` visible to the templates.
pub async fn scope<F: Future>(settings: Arc<Settings>, f: F) -> F::Output {
    SETTINGS.scope(settings, f).await
}

/// Runs `f` (a render) with `settings` visible to the templates.
pub fn sync_scope<R>(settings: Arc<Settings>, f: impl FnOnce() -> R) -> R {
    SETTINGS.sync_scope(settings, f)
}

/// The product name the pages show (`product_name`).
pub fn product_name() -> String {
    SETTINGS
        .try_with(|s| s.product_name.clone())
        .unwrap_or_else(|_| DEFAULT_PRODUCT_NAME.to_owned())
}

/// The header's logo (`logo_url`), if one is configured.
pub fn logo_url() -> Option<String> {
    SETTINGS.try_with(|s| s.logo_url.clone()).ok().flatten()
}

/// The CSP of the pages answering now: the fixed policy, plus exactly the
/// logo's origin in `img-src` when the logo is on another server.
pub fn content_security_policy() -> String {
    let origin = SETTINGS
        .try_with(|s| s.logo_url.as_deref().and_then(logo_origin))
        .ok()
        .flatten();
    match origin {
        Some(origin) => format!("{CONTENT_SECURITY_POLICY}; img-src 'self' {origin}"),
        None => CONTENT_SECURITY_POLICY.to_owned(),
    }
}

/// The origin (`https://host[:port]`) of an external logo; `None` for a
/// path on this server.
pub fn logo_origin(logo_url: &str) -> Option<String> {
    if logo_url.starts_with('/') {
        return None;
    }
    let origin = url::Url::parse(logo_url).ok()?.origin();
    origin.is_tuple().then(|| origin.ascii_serialization())
}

/// Whether `logo_url` may be put in the pages: an `https://` URL with a
/// plain host, or an absolute path on this server (`/static/logo.svg`, not
/// `//host/…`); no quotes, spaces, angle brackets or backslashes anywhere,
/// so neither the `src` attribute nor the CSP can be broken out of, and no
/// `javascript:` or `data:` scheme.
pub fn check_logo_url(s: &str) -> Option<()> {
    if s.len() > 2048
        || s.chars().any(|c| {
            c.is_whitespace()
                || c.is_control()
                || matches!(c, '"' | '\'' | '<' | '>' | '\\' | '`' | ';' | ',')
        })
    {
        return None;
    }
    if let Some(path) = s.strip_prefix('/') {
        return (!path.starts_with('/')).then_some(());
    }
    let (scheme, _) = s.split_once("://")?;
    if !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    let url = url::Url::parse(s).ok()?;
    let host = url.host_str()?;
    let plain_host = host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    (url.scheme() == "https" && url.username().is_empty() && url.password().is_none() && plain_host)
        .then_some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logo_urls_are_https_or_local_paths_without_tricks() {
        for good in [
            "/static/logo.svg",
            "https://cdn.example.com/logo.png",
            "https://cdn.example.com:8443/a/logo.png?v=2",
            "HTTPS://CDN.Example.com/logo.png",
        ] {
            assert!(check_logo_url(good).is_some(), "{good}");
        }
        for bad in [
            "javascript:alert(1)",
            "data:image/svg+xml,<svg/>",
            "http://cdn.example.com/logo.png",
            "//cdn.example.com/logo.png",
            "/\\evil.example/logo.png",
            "https://cdn.example.com/logo.png\"onerror=\"x",
            "https://cdn.example.com/it's.png",
            "https://cdn.example.com/a b.png",
            "https://user:pw@cdn.example.com/logo.png",
            "https://cdn.example.com;script-src/x.png",
            "logo.png",
            "",
        ] {
            assert!(check_logo_url(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn an_external_logo_adds_exactly_its_origin() {
        assert_eq!(
            logo_origin("https://CDN.example.com:443/logo.png?x=1").as_deref(),
            Some("https://cdn.example.com")
        );
        assert_eq!(
            logo_origin("https://cdn.example.com:8443/logo.png").as_deref(),
            Some("https://cdn.example.com:8443")
        );
        assert_eq!(logo_origin("/static/logo.svg"), None);
        assert_eq!(content_security_policy(), CONTENT_SECURITY_POLICY);
    }
}
