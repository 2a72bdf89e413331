//! Durations in settings and command lines.

use std::time::Duration;

/// Durations in the contract's forms (`90s`, `10m`, `2h`, `30d`) or any
/// humantime form (`1h 30m`). Zero is refused: no setting means "never".
pub fn parse(s: &str) -> Option<Duration> {
    let d = humantime::parse_duration(s).ok()?;
    (!d.is_zero()).then_some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_forms_parse_and_zero_does_not() {
        assert_eq!(parse("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse("1h 30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse("30d"), Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse("0s"), None);
        assert_eq!(parse("soon"), None);
    }
}
