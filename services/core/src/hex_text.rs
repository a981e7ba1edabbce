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
/// the text back. `out` must be `prefix.len() + 2 * bytes.len()` long: a
/// debug build stops on any other length (a caller's bug: a digest slice
/// widened without its buffer); a release build gives what fits, cut at
/// the end and never inside a character.
pub fn write<'a>(out: &'a mut [u8], prefix: &str, bytes: &[u8]) -> &'a str {
    debug_assert_eq!(out.len(), prefix.len() + 2 * bytes.len(), "hex_text buffer");
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
    fn a_prefix_of_any_characters_is_written_whole() {
        let mut out = [0u8; 2 + 4];
        assert_eq!(write(&mut out, "é", &[1, 0xfe]), "é01fe");
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "hex_text buffer")]
    fn a_buffer_of_the_wrong_length_is_a_bug_a_debug_build_stops_on() {
        let mut out = [0u8; 6];
        write(&mut out, "oj-", &[0xab, 0xcd]);
    }
}
