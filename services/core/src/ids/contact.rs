//! E-mail and phone values: normalised, placeholders told apart, hashed.
//!
//! In: a raw e-mail or phone value. Out: its normalised form or why it is
//! blocked ([`BlockReason`]), and the SHA-256 hex that stands for it
//! everywhere else. Keeps nothing.

use sha2::{Digest, Sha256};

use super::BlockReason;

/// Trim and lowercase. An email without `@` is not an email, and a
/// placeholder (see [`is_placeholder_email`]) belongs to no one.
pub fn normalise_email(raw: &str) -> Result<String, BlockReason> {
    let e = raw.trim().to_lowercase();
    if e.is_empty() {
        Err(BlockReason::Empty)
    } else if !e.contains('@') || is_placeholder_email(&e) {
        Err(BlockReason::Junk)
    } else {
        Ok(e)
    }
}

/// Addresses a form or a till fills in when the customer gives none: they
/// reach no person, and many people share them, so they must link no one
/// and receive nothing. A local part that says "no e-mail" or "no reply"
/// (`noemail@`, `no.email@`, `noreply@`, `donotreply@`...), a local part that
/// is itself a placeholder (`none@`, `test@`, `unknown@`...) at a domain
/// named the same (`none@none.com`, `test@test.com`). Lowercase input.
///
/// The domains RFC 2606 and RFC 6761 reserve (`example.com`, `.test`,
/// `.invalid`, ...) are not blocked here: test traffic and fixtures use them
/// as stand-ins for real people; a deployment that must block them adds a
/// `normalise.blocked_patterns` entry such as `@example\.com$`.
pub fn is_placeholder_email(e: &str) -> bool {
    let Some((local, domain)) = e.rsplit_once('@') else {
        return false;
    };
    let squashed: String = local.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    const NO_ONE: &[&str] = &[
        "noemail",
        "nomail",
        "noreply",
        "donotreply",
        "dontreply",
        "noaddress",
        "noemailaddress",
    ];
    if NO_ONE.contains(&squashed.as_str()) {
        return true;
    }
    const FILLER: &[&str] = &["none", "test", "unknown", "na", "null", "no", "dummy", "fake", "email"];
    let domain_name = domain.split('.').next().unwrap_or("");
    FILLER.contains(&squashed.as_str()) && (domain_name == squashed || NO_ONE.contains(&domain_name))
}

/// Digits with the country code: `+44 20 7946 0000` and `0044 20 7946 0000`
/// become `442079460000`; a national number gets `default_cc` in front (its
/// leading trunk zeros dropped).
pub fn normalise_phone(raw: &str, default_cc: &str) -> Result<String, BlockReason> {
    let t = raw.trim();
    let digits: String = t.chars().filter(char::is_ascii_digit).collect();
    let number = if t.starts_with('+') {
        digits
    } else if let Some(rest) = digits.strip_prefix("00") {
        rest.to_string()
    } else if !default_cc.is_empty() {
        format!("{default_cc}{}", digits.trim_start_matches('0'))
    } else {
        digits
    };
    if number.trim_start_matches('0').len() < 5 {
        return Err(if number.is_empty() {
            BlockReason::Empty
        } else {
            BlockReason::Junk
        });
    }
    Ok(number)
}

pub fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::super::{BlockReason, Namespaces};

    fn ns() -> Namespaces {
        Namespaces::with_defaults()
    }

    #[test]
    fn placeholder_emails_are_junk_and_real_ones_are_not() {
        let n = ns();
        for junk in [
            "noemail@noemail.com",
            " NoEmail@NoEmail.com ",
            "no.email@shop.example.co.uk",
            "no-reply@acme.com",
            "donotreply@acme.com",
            "none@none.com",
            "test@test.com",
            "no@noemail.com",
        ] {
            assert_eq!(n.normalise("email", junk).unwrap(), Err(BlockReason::Junk), "{junk}");
        }
        for real in [
            "jane.doe@acme.com",
            "none@acme.com",
            "test.user@gmail.com",
            "mail@mail.com",
            "noemailsupport@gmail.com",
            "jane@example.co.uk",
            "jane@testing.io",
            // Reserved domains stand in for people in test traffic.
            "jane@example.com",
            "jane@host.test",
        ] {
            assert!(n.normalise("email", real).unwrap().is_ok(), "{real}");
        }
    }
}
