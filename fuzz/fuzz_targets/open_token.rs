//! Opening arbitrary bytes as a token never panics, and nothing but a token we minted opens.
#![no_main]

use std::sync::OnceLock;

use cloakroom_token::{inspect, Codec, ErrorKind, KeyRing};
use libfuzzer_sys::fuzz_target;

const NOW: u64 = 1_767_225_600;

fn codec() -> &'static (Codec, Vec<String>) {
    static CODEC: OnceLock<(Codec, Vec<String>)> = OnceLock::new();
    CODEC.get_or_init(|| {
        let ring = KeyRing::from_toml(
            "[[keys]]\nid = \"k1\"\nsecret = \"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8\"\nprimary = true\n",
        )
        .expect("fixed ring");
        let codec = ring.codec("__Host-session").expect("codec");
        let minted = vec![
            codec.sign(b"user:950", NOW, NOW + 60).expect("sign"),
            codec.seal(b"user:950", NOW, NOW + 60).expect("seal"),
        ];
        (codec, minted)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (codec, minted) = codec();
    let _ = inspect(text);
    match codec.open(text, NOW) {
        Ok(_) => assert!(
            minted.iter().any(|m| m == text),
            "an input the codec never minted opened: {text:?}"
        ),
        Err(e) => assert!(matches!(e.kind(), ErrorKind::Invalid | ErrorKind::Expired)),
    }
});
