//! Human durations (`"200ms"`, `"10s"`, `"1m"`) and sizes (`"512KiB"`, `"10MB"`) in config.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Parses a human duration.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("`{s}` is not a duration ({e}); write it like \"200ms\", \"10s\" or \"1m\""))
}

/// `#[serde(deserialize_with = "fbp_runtime::units::duration")]`
pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

/// The same for an optional key.
pub fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    Option::<String>::deserialize(d)?.map(|s| parse_duration(&s).map_err(serde::de::Error::custom)).transpose()
}

/// Parses a human size into bytes: `"10MiB"` (binary units), `"10MB"` (decimal
/// units), `"4096"` (bytes); the unit is case-insensitive.
pub fn parse_size(s: &str) -> Result<u64, String> {
    s.trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| format!("`{s}` is not a size ({e}); write it like \"512KiB\", \"10MiB\" or \"1GB\""))
}

/// The size in config key `key`, which must be more than zero bytes.
pub fn positive_size(key: &str, s: &str) -> Result<usize, String> {
    match parse_size(s) {
        Ok(0) => Err(format!("`{key}` must be more than 0 bytes")),
        Ok(n) => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
        Err(e) => Err(format!("`{key}`: {e}")),
    }
}

/// `#[serde(deserialize_with = "fbp_runtime::units::size")]`
pub fn size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let s = String::deserialize(d)?;
    parse_size(&s).map_err(serde::de::Error::custom)
}

/// The same for an optional key.
pub fn opt_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Option::<String>::deserialize(d)?.map(|s| parse_size(&s).map_err(serde::de::Error::custom)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_human_durations() {
        assert_eq!(parse_duration("200ms").unwrap(), Duration::from_millis(200));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert!(parse_duration("soon").unwrap_err().contains("\"10s\""));
    }

    #[test]
    fn parses_human_sizes() {
        assert_eq!(parse_size("10MiB").unwrap(), 10 * 1024 * 1024);
        assert_eq!(parse_size("10 MB").unwrap(), 10_000_000);
        assert_eq!(parse_size("1kib").unwrap(), 1024);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size(" 1.5KiB ").unwrap(), 1536);
        assert!(parse_size("big").unwrap_err().contains("\"10MiB\""));
        assert!(parse_size("10 parsecs").is_err());
    }

    #[test]
    fn size_helpers_deserialise_strings() {
        #[derive(serde::Deserialize)]
        struct C {
            #[serde(deserialize_with = "size")]
            max: u64,
            #[serde(default, deserialize_with = "opt_size")]
            opt: Option<u64>,
        }
        let c: C = serde_json::from_value(serde_json::json!({"max": "2KiB", "opt": null})).unwrap();
        assert_eq!((c.max, c.opt), (2048, None));
        let bad = serde_json::from_value::<C>(serde_json::json!({"max": "2 furlongs"}));
        assert!(bad.is_err());
    }
}
