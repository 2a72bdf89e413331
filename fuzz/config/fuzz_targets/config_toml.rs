//! `tessera.toml` as the server reads it: figment's TOML provider, then the
//! whole validation of `Settings::from_figment` (every setting's parser and
//! the checks across settings), exactly as `tessera serve --config FILE`
//! does after reading the file.
//!
//! Invariants: never panics (any file gives settings or one error); the
//! HS256 secret's effective value (`tessera config show`) is redacted;
//! accepted settings keep the idle timeout within the absolute one.
#![no_main]

use figment::Figment;
use figment::providers::{Format, Toml};
use libfuzzer_sys::fuzz_target;
use tessera::config::Settings;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(settings) = Settings::from_figment(&Figment::from(Toml::string(text))) else {
        return;
    };
    assert!(settings.session_idle_timeout <= settings.session_absolute_timeout);
    if let Some(secret) = &settings.hs256_secret {
        let shown = settings.effective.iter().find(|e| e.key == "hs256_secret");
        assert!(
            shown.is_some_and(|e| !e.value.contains(secret.0.as_str())),
            "the HS256 secret is shown: {shown:?}"
        );
    }
});
