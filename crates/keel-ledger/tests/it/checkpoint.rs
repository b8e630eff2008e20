//! Signed notes and checkpoints: Go `note` interop vector, round trips, tampering, wrong keys,
//! key ids, key strings and malformed input (errors, never panics).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use keel_ledger::{
    key_id, parse_note, parse_signed_checkpoint, parse_signer_key, sign_note, signer_key_string,
    signing_key_from_bytes, verifier_key_string, verify_checkpoint, Checkpoint, LedgerError,
    MemoryTree, NoteSignature, SigningKey, VerifierKey,
};
use proptest::prelude::*;
use sha2::{Digest, Sha256};

// The example from golang.org/x/mod/sumdb/note's documentation.
const GO_SKEY: &str =
    "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const GO_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const GO_TEXT: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
const GO_SIG: &str = "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

fn key(seed: u8) -> SigningKey {
    signing_key_from_bytes(&[seed; 32]).unwrap()
}

fn checkpoint() -> Checkpoint {
    let mut tree = MemoryTree::new();
    for i in 0..42u32 {
        tree.append_data(&i.to_be_bytes());
    }
    Checkpoint::new("keel.example/ledger", tree.size(), tree.root()).unwrap()
}

fn signed() -> (String, String) {
    let k = key(1);
    let note = checkpoint().sign(&k, "keel.example/ledger").unwrap();
    let vkey = verifier_key_string("keel.example/ledger", &k.verifying_key()).unwrap();
    (note, vkey)
}

#[test]
fn go_note_interop_vector() {
    let (name, skey) = parse_signer_key(GO_SKEY).unwrap();
    assert_eq!(name, "PeterNeumann");
    assert_eq!(signer_key_string(&name, &skey).unwrap(), GO_SKEY);
    assert_eq!(
        verifier_key_string(&name, &skey.verifying_key()).unwrap(),
        GO_VKEY
    );
    let note = sign_note(GO_TEXT, &skey, &name).unwrap();
    assert_eq!(note, format!("{GO_TEXT}\n{GO_SIG}"));
    let verifier = VerifierKey::parse(GO_VKEY).unwrap();
    assert_eq!(verifier.to_string(), GO_VKEY);
    assert_eq!(verifier.open(&note).unwrap(), GO_TEXT);
    let tampered = note.replace("cryptography", "cryptographY");
    assert!(matches!(
        verifier.open(&tampered),
        Err(LedgerError::BadSignature(_))
    ));
}

#[test]
fn sign_then_verify_round_trip() {
    let (note, vkey) = signed();
    let cp = checkpoint();
    assert!(note.starts_with(&format!("{}\n", cp.body())));
    assert_eq!(cp.body().lines().count(), 3);
    assert_eq!(verify_checkpoint(&note, &vkey).unwrap(), cp);
    let (parsed, sigs) = parse_signed_checkpoint(&note).unwrap();
    assert_eq!(parsed, cp);
    assert_eq!(sigs.len(), 1);
    assert_eq!(sigs[0].key_name, "keel.example/ledger");
    assert_eq!(sigs[0].signature.len(), 64);
    assert_eq!(
        sigs[0].line(),
        note.lines().last().unwrap().to_owned() + "\n"
    );
    assert_eq!(Checkpoint::parse_body(&cp.body()).unwrap(), cp);
    // Also with a freshly generated key.
    let k = SigningKey::generate(&mut rand::rngs::OsRng);
    let note = cp.sign(&k, "other").unwrap();
    let vkey = verifier_key_string("other", &k.verifying_key()).unwrap();
    assert_eq!(verify_checkpoint(&note, &vkey).unwrap(), cp);
}

#[test]
fn key_id_matches_hand_computation() {
    let k = key(3);
    let public = k.verifying_key();
    let mut h = Sha256::new();
    h.update(b"log.example");
    h.update([0x0a, 0x01]);
    h.update(public.as_bytes());
    let want = h.finalize();
    assert_eq!(key_id("log.example", &public), want[..4]);
    let vkey = verifier_key_string("log.example", &public).unwrap();
    let parts: Vec<&str> = vkey.splitn(3, '+').collect();
    assert_eq!(parts[0], "log.example");
    assert_eq!(
        parts[1],
        want[..4]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let raw = STANDARD.decode(parts[2]).unwrap();
    assert_eq!(raw[0], 0x01);
    assert_eq!(&raw[1..], public.as_bytes());
    // The signature line's first 4 bytes are the key id.
    let note = checkpoint().sign(&k, "log.example").unwrap();
    let (_, sigs) = parse_signed_checkpoint(&note).unwrap();
    assert_eq!(sigs[0].key_id, want[..4]);
}

/// `edit` applied to a valid note must make verification fail with `want`'s status.
fn check(label: &str, edit: impl Fn(&str) -> String, want_status: u16) {
    let (note, vkey) = signed();
    let edited = edit(&note);
    assert_ne!(edited, note, "{label}: edit changed nothing");
    let err = verify_checkpoint(&edited, &vkey).expect_err(label);
    assert_eq!(err.http_status(), want_status, "{label}: {err}");
}

#[test]
fn tampering_is_detected() {
    let cp = checkpoint();
    let root = keel_ledger::encode_hash(&cp.root);
    let mut other_root = cp.root;
    other_root[0] ^= 1;
    let other_root = keel_ledger::encode_hash(&other_root);
    check("size", |n| n.replacen("\n42\n", "\n43\n", 1), 422);
    check("root", |n| n.replacen(&root, &other_root, 1), 422);
    check(
        "origin",
        |n| n.replacen("keel.example/ledger\n42", "keel.example/ledgeR\n42", 1),
        422,
    );
    check(
        "signature byte",
        |n| {
            let (body, sig) = n.split_once("\n\n").unwrap();
            let line = sig.trim_end();
            let (prefix, b64) = line.rsplit_once(' ').unwrap();
            let mut raw = STANDARD.decode(b64).unwrap();
            raw[10] ^= 0x80;
            format!("{body}\n\n{prefix} {}\n", STANDARD.encode(raw))
        },
        422,
    );
    check(
        "key id",
        |n| {
            let (body, sig) = n.split_once("\n\n").unwrap();
            let (prefix, b64) = sig.trim_end().rsplit_once(' ').unwrap();
            let mut raw = STANDARD.decode(b64).unwrap();
            raw[0] ^= 1;
            format!("{body}\n\n{prefix} {}\n", STANDARD.encode(raw))
        },
        422,
    );
    check(
        "signature removed",
        |n| n.split_once("\n\n").unwrap().0.to_owned() + "\n\n",
        400,
    );
    // The signature is checked before the body is parsed, so edits to the body are 422.
    check(
        "size with leading zero",
        |n| n.replacen("\n42\n", "\n042\n", 1),
        422,
    );
    check(
        "extension line",
        |n| n.replacen("\n\n", "\nextra\n\n", 1),
        422,
    );
    check("truncated", |n| n[..n.len() - 2].to_owned(), 400);
}

#[test]
fn wrong_keys_are_rejected() {
    let (note, _) = signed();
    let other = key(2).verifying_key();
    // Same name, different key: different key id, so no signature matches.
    let vkey = verifier_key_string("keel.example/ledger", &other).unwrap();
    assert!(matches!(
        verify_checkpoint(&note, &vkey),
        Err(LedgerError::NoMatchingSignature(_))
    ));
    // Right key, different name.
    let vkey = verifier_key_string("keel.example/other", &key(1).verifying_key()).unwrap();
    assert!(matches!(
        verify_checkpoint(&note, &vkey),
        Err(LedgerError::NoMatchingSignature(_))
    ));
    // A signature line claiming our name and id but made by another key.
    let k1 = key(1);
    let forged_sig = NoteSignature {
        key_name: "keel.example/ledger".into(),
        key_id: key_id("keel.example/ledger", &k1.verifying_key()),
        signature: {
            use ed25519_dalek::Signer as _;
            key(2)
                .sign(checkpoint().body().as_bytes())
                .to_bytes()
                .to_vec()
        },
    };
    let forged = format!("{}\n{}", checkpoint().body(), forged_sig.line());
    let vkey = verifier_key_string("keel.example/ledger", &k1.verifying_key()).unwrap();
    assert!(matches!(
        verify_checkpoint(&forged, &vkey),
        Err(LedgerError::BadSignature(_))
    ));
    // Extra signatures from unknown keys are ignored.
    let extra = sign_note(&checkpoint().body(), &key(5), "witness").unwrap();
    let extra_line = extra.split_once("\n\n").unwrap().1;
    let cosigned = format!("{note}{extra_line}");
    assert_eq!(verify_checkpoint(&cosigned, &vkey).unwrap(), checkpoint());
}

#[test]
fn malformed_input_gives_errors() {
    let (note, vkey) = signed();
    let body = checkpoint().body();
    let sig = note.split_once("\n\n").unwrap().1.to_owned();
    let root = keel_ledger::encode_hash(&checkpoint().root);
    let notes = [
        String::new(),
        "\n".into(),
        "\n\n".into(),
        "a\n".into(),
        "a\n\n".into(),
        format!("{body}\n"),
        format!("{body}{sig}"),
        format!("{body}\n{}", sig.trim_end()),
        format!("{body}\n{sig}\n"),
        format!("\n{body}\n{sig}"),
        format!("{}\n{sig}", body.replace('\n', "\r\n")),
        format!("{body}\n{}", sig.replacen('\u{2014}', "-", 1)),
        format!("{body}\n{}", sig.replacen(' ', "  ", 1)),
        format!("{body}\n\u{2014} keel.example/ledger !!!\n"),
        format!("{body}\n\u{2014} keel.example/ledger AAAA\n"),
        format!(
            "{body}\n\u{2014} bad+name {}",
            sig.rsplit_once(' ').unwrap().1
        ),
        format!("{body}\n\u{2014}\n"),
        format!("{body}\n{}", sig.repeat(101)),
        format!("origin\n+42\n{root}\n\n{sig}"),
        format!("origin\n18446744073709551616\n{root}\n\n{sig}"),
        format!("origin\n42\n{}\n\n{sig}", &root[..root.len() - 4]),
        format!("origin\n42\nZG9uJ3QgY2FyZSAy\n\n{sig}"),
        format!("origin\n42\n\n{sig}"),
        format!("\n42\n{root}\n\n{sig}"),
        format!("origin\n\n42\n{root}\n\n{sig}"),
        format!("origin\n42 \n{root}\n\n{sig}"),
        format!("origin\u{7}\n42\n{root}\n\n{sig}"),
    ];
    for (i, text) in notes.iter().enumerate() {
        assert!(
            verify_checkpoint(text, &vkey).is_err(),
            "case {i}: {text:?}"
        );
        assert!(parse_signed_checkpoint(text).is_err(), "case {i}: {text:?}");
    }
    assert!(parse_note("no blank line\n").is_err());
}

#[test]
fn key_strings_validate() {
    let k = key(4);
    let good = verifier_key_string("name", &k.verifying_key()).unwrap();
    assert!(VerifierKey::parse(&good).is_ok());
    let (_, id_and_key) = good.split_once('+').unwrap();
    let (id, b64) = id_and_key.split_once('+').unwrap();
    let mut raw = STANDARD.decode(b64).unwrap();
    for bad in [
        String::new(),
        "name".into(),
        format!("name+{id}"),
        format!("other+{id}+{b64}"),
        format!("+{id}+{b64}"),
        format!("na me+{id}+{b64}"),
        format!("name+{}+{b64}", &id[..7]),
        format!("name+zzzzzzzz+{b64}"),
        format!("name+-1234567+{b64}"),
        format!("name+{id}+{}", &b64[..b64.len() - 4]),
        format!("name+{id}+not base64"),
        {
            raw[0] = 0x02;
            format!("name+{id}+{}", STANDARD.encode(&raw))
        },
    ] {
        let err = VerifierKey::parse(&bad).expect_err(&bad);
        assert_eq!(err.http_status(), 400, "{bad}: {err}");
    }
    for name in ["", "a b", "a+b", "a\tb", "a\nb"] {
        assert!(matches!(
            verifier_key_string(name, &k.verifying_key()),
            Err(LedgerError::InvalidKeyName(_))
        ));
        assert!(checkpoint().sign(&k, name).is_err());
    }
    assert!(Checkpoint::new("", 0, [0; 32]).is_err());
    assert!(Checkpoint::new("a\nb", 0, [0; 32]).is_err());
    assert!(signing_key_from_bytes(&[0; 31]).is_err());
    assert!(parse_signer_key(GO_VKEY).is_err());
    assert!(parse_signer_key(&GO_SKEY.replace("c74f20a3", "c74f20a4")).is_err());
    assert!(sign_note("no newline", &k, "n").is_err());
    assert!(sign_note("blank\n\nline\n", &k, "n").is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>(), prefix in "(origin\n[0-9]{1,3}\n)?") {
        let (_, vkey) = signed();
        let input = format!("{prefix}{text}");
        let _ = parse_signed_checkpoint(&input);
        let _ = verify_checkpoint(&input, &vkey);
        let _ = VerifierKey::parse(&text);
        let _ = parse_signer_key(&text);
    }

    #[test]
    fn any_single_char_change_breaks_verification(pos in any::<prop::sample::Index>(), c in any::<char>()) {
        let (note, vkey) = signed();
        let chars: Vec<char> = note.chars().collect();
        let i = pos.index(chars.len());
        prop_assume!(chars[i] != c);
        let mut edited = chars.clone();
        edited[i] = c;
        let edited: String = edited.into_iter().collect();
        prop_assert!(verify_checkpoint(&edited, &vkey).is_err(), "accepted {:?}", edited);
    }
}
