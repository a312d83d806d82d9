//! The newtype every secret value lives in: redacted `Debug`, no `Display`, no `Serialize`.
//! A leaf: the configuration fills it, the verifiers and the authorization server use it.

use std::fmt;

/// A secret value in memory. Printing it shows `Secret(***)`; there is no way to log it by
/// accident. Dropped values are not zeroized: the process memory is the trust boundary.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The secret itself, for the one place that must send or hash it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}
