//! Signature verification: `FastPix-Signature` is base64(HMAC-SHA256(key = base64_decode(secret), raw body)).
//! See `fastpix-webhooks.md` §3 (test vector included in the tests below).

use base64::Engine as _;
use base64::alphabet;
use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use hmac::{KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = hmac::Hmac<Sha256>;

/// Decodes secrets as copied from a dashboard: padding optional, stray trailing bits tolerated
/// ("a non-canonical base64 copy decodes to the same key").
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// The configured signing keys (already base64-decoded). Empty means unsigned webhooks are accepted.
#[derive(Clone, Default)]
pub struct Secrets {
    keys: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({} configured)", self.keys.len())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "FASTPIX_WEBHOOK_SECRET: entry {position} is not base64; paste the signing secret exactly as the FastPix dashboard shows it"
)]
pub struct BadSecret {
    pub position: usize,
}

impl Secrets {
    /// Parses a comma-separated list of base64 secrets (whitespace around each entry is ignored).
    pub fn parse(list: Option<&str>) -> Result<Self, BadSecret> {
        let mut keys = Vec::new();
        for (index, entry) in list.unwrap_or("").split(',').map(str::trim).enumerate() {
            if entry.is_empty() {
                continue;
            }
            let key = LENIENT.decode(entry).map_err(|_| BadSecret {
                position: index + 1,
            })?;
            keys.push(key);
        }
        Ok(Self { keys })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// True when `signature` (the header value) is the HMAC of `body` under any configured key.
    /// The comparison is constant-time (`Mac::verify_slice`).
    pub fn verify(&self, body: &[u8], signature: Option<&str>) -> bool {
        let Some(signature) = signature else {
            return false;
        };
        let Ok(expected) = STANDARD.decode(signature.trim()) else {
            return false;
        };
        self.keys.iter().any(|key| {
            let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
            mac.update(body);
            mac.verify_slice(&expected).is_ok()
        })
    }
}

/// Signs `body` with a base64 secret, as FastPix does (used by tests and the simulator).
pub fn sign(secret_base64: &str, body: &[u8]) -> String {
    let key = LENIENT
        .decode(secret_base64.trim())
        .expect("signing secret must be base64");
    let mut mac = HmacSha256::new_from_slice(&key).expect("HMAC takes keys of any length");
    mac.update(body);
    STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "ZmFzdHBpeC1kZW1vLXNpZ25pbmctc2VjcmV0LTMyYiE=";
    const BODY: &str = r#"{"type":"video.media.ready","object":{"type":"media","id":"7d3c2b1a-4e5f-4a6b-8c9d-0e1f2a3b4c5d"},"id":"0a1b2c3d-1111-4a00-8000-000000000002"}"#;

    #[test]
    fn documented_test_vector_verifies() {
        let secrets = Secrets::parse(Some(SECRET)).unwrap();
        assert!(secrets.verify(
            BODY.as_bytes(),
            Some("3QV/Yld9ne5iKDF2OuHzwvrSkfwvYZfBjm1kI4vjL7g=")
        ));
        assert_eq!(
            sign(SECRET, BODY.as_bytes()),
            "3QV/Yld9ne5iKDF2OuHzwvrSkfwvYZfBjm1kI4vjL7g="
        );
    }

    #[test]
    fn signature_keyed_with_the_undecoded_secret_is_refused() {
        let secrets = Secrets::parse(Some(SECRET)).unwrap();
        assert!(!secrets.verify(
            BODY.as_bytes(),
            Some("6y02b2jHYPxGx3eUDxznf2ufj0shycC3iDWt42yXZ7M=")
        ));
        assert!(!secrets.verify(BODY.as_bytes(), None));
        assert!(!secrets.verify(BODY.as_bytes(), Some("not base64!")));
    }

    #[test]
    fn any_secret_of_a_rotation_list_matches() {
        let secrets = Secrets::parse(Some(&format!(" b2xkLXNlY3JldA== ,{SECRET}\n"))).unwrap();
        assert!(secrets.verify(
            BODY.as_bytes(),
            Some("3QV/Yld9ne5iKDF2OuHzwvrSkfwvYZfBjm1kI4vjL7g=")
        ));
    }

    #[test]
    fn fixture_bytes_verify() {
        let body = include_bytes!("../../tests/fixtures/video.media.ready.json");
        let secrets = Secrets::parse(Some(SECRET)).unwrap();
        assert!(secrets.verify(body, Some("cJkk3zE9ubrS5c1sPAFflUisOA4TAvi2vtl380r49kM=")));
    }

    #[test]
    fn a_secret_that_is_not_base64_is_refused_with_its_position() {
        assert_eq!(
            Secrets::parse(Some("b2s=,not base64!")).unwrap_err(),
            BadSecret { position: 2 }
        );
    }
}
