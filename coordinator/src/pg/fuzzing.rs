//! The path a client's bytes take before the engine sees them, as one function: the framing's
//! limits and shape checks ([`super::coalesce`], [`super::wellformed`]), then pgwire's decoder
//! on what they admit. The fuzz target (`fuzz/fuzz_targets/client_bytes.rs`) and the corpus
//! test below drive it; neither may ever panic.

use super::coalesce::{Coalesce, FrameError};
use bytes::BytesMut;
use pgwire::messages::{DecodeContext, PgWireFrontendMessage, ProtocolVersion};

/// Longest message the fuzzed path admits (small, so inputs stay cheap).
const MAX_MESSAGE: usize = 1 << 20;

/// Feeds `input` to a connection's reading path: with a first byte of 0, the rest is a
/// start-up packet; otherwise the rest is what a client sends after start-up. Returns how many
/// messages pgwire decoded, or the framing's refusal.
pub fn decode_client_bytes(input: &[u8]) -> Result<usize, FrameError> {
    let Some((&mode, bytes)) = input.split_first() else {
        return Ok(0);
    };
    let mut framing = Coalesce::new(()).with_limit(MAX_MESSAGE);
    let mut ctx = DecodeContext::new(ProtocolVersion::PROTOCOL3_0);
    ctx.awaiting_frontend_ssl = false;
    if mode != 0 {
        let mut startup = 196_608u32.to_be_bytes().to_vec();
        startup.extend_from_slice(b"user\0fuzz\0\0");
        let mut packet = ((startup.len() + 4) as u32).to_be_bytes().to_vec();
        packet.extend(startup);
        framing.observe_incoming(&packet);
        ctx.awaiting_frontend_startup = false;
    }
    framing.observe_incoming(bytes);
    if let Some(e) = framing.refused() {
        return Err(e.clone());
    }
    let mut buf = BytesMut::from(bytes);
    let mut decoded = 0;
    while let Ok(Some(_)) = PgWireFrontendMessage::decode(&mut buf, &ctx) {
        decoded += 1;
        if mode == 0 {
            break;
        }
    }
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every input of the fuzz corpus kept in the repository (seeds and anything a fuzzing run
    /// found) passes through without a panic.
    #[test]
    fn the_fuzz_corpus_decodes_without_panics() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/client_bytes");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).expect("corpus") {
            let input = std::fs::read(entry.expect("entry").path()).expect("read");
            let _ = decode_client_bytes(&input);
            seen += 1;
        }
        assert!(seen >= 10, "the corpus has {seen} inputs");
    }

    #[test]
    fn well_formed_messages_decode_and_the_reported_ones_are_refused() {
        let mut ok = vec![1u8];
        ok.extend(b"Q\0\0\0\x0dselect 1\0");
        ok.extend(b"S\0\0\0\x04");
        assert_eq!(decode_client_bytes(&ok), Ok(2));
        let mut bad = vec![1u8];
        bad.extend(b"E\0\0\0\x08\0\0\0\0");
        assert!(decode_client_bytes(&bad).is_err());
    }
}
