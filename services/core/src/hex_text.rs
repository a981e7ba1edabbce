//! Ids written as a prefix and a digest's lowercase hex, on the stack.
//!
//! In: a prefix, bytes and a buffer sized for both. Out: the text, borrowed
//! from the buffer. Keeps nothing.
//!
//! Why: a One ID (`oj-` and 24 hex digits) and a decision's id (`act-` and
//! 32) were made as `format!("oj-{}", hex::encode(..))`: the hex, the
//! formatted text and then the shared copy the state keeps, three
//! allocations where the kept copy is the only one needed, and an action id
//! is made for every candidate of every decision to seed its draw
//! (session 35: about 2.4 of the core's 39.5 allocations an event).

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Writes `prefix` and the lowercase hex of `bytes` into `out` and gives
/// the text back. Size `out` as `prefix.len() + 2 * bytes.len()`: what does
/// not fit is cut off, whole characters of an ASCII prefix first.
pub fn write<'a>(out: &'a mut [u8], prefix: &str, bytes: &[u8]) -> &'a str {
    let hex = bytes
        .iter()
        .flat_map(|b| [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 15)]]);
    let mut len = 0;
    for (slot, c) in out.iter_mut().zip(prefix.bytes().chain(hex)) {
        *slot = c;
        len += 1;
    }
    let text = &out[..len];
    std::str::from_utf8(text).unwrap_or_else(|e| {
        // Only a prefix cut inside a character: keep what is whole.
        std::str::from_utf8(&text[..e.valid_up_to()]).unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn the_same_text_as_formatting_the_hex(prefix in "[a-z:-]{0,6}", bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let mut out = vec![0u8; prefix.len() + 2 * bytes.len()];
            prop_assert_eq!(write(&mut out, &prefix, &bytes), format!("{prefix}{}", hex::encode(&bytes)));
        }
    }

    #[test]
    fn a_short_buffer_cuts_the_text_and_a_character_is_never_split() {
        let mut out = [0u8; 6];
        assert_eq!(write(&mut out, "oj-", &[0xab, 0xcd]), "oj-abc");
        let mut out = [0u8; 2];
        assert_eq!(write(&mut out, "é", &[1]), "é");
        let mut out = [0u8; 1];
        assert_eq!(write(&mut out, "é", &[1]), "");
    }
}
